"""Data faults and formats through the command line: `mtfuse data check` (issue 15, sections 2, 3 and 6).

Every bad input is one `error:` line naming the file, line or field, exit code 2, no traceback; the report
stays readable at 80 columns and warns about labels that dev or test have but train has not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import run_cli


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def check(tmp_path: Path, tiny_model_dir: Path):
    """``check(task)``: run `mtfuse data check` on a one-task config; (exit code, stdout, stderr)."""

    def run(*tasks: dict, json_out: bool = False) -> tuple[int, str, str]:
        raw = {
            "cache_dir": str(tmp_path / "cache"),
            "model": {"name_or_path": str(tiny_model_dir)},
            "tasks": list(tasks),
        }
        cfg = write(tmp_path / "cfg.yaml", yaml.safe_dump(raw, sort_keys=False))
        return run_cli(["data", "check", cfg, *(["--json"] if json_out else [])])

    return run


def fails(result: tuple[int, str, str], *expected: str) -> None:
    code, out, err = result
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert err.startswith("error:") and "Traceback" not in err + out
    flat = " ".join(err.split())
    for text in expected:
        assert " ".join(text.split()) in flat, f"{text!r} not in {err!r}"


def csv_task(path: Path, **data: object) -> dict:
    return {
        "name": "t",
        "type": "classification",
        "text_fields": ["text"],
        "label_field": "label",
        "data": {"format": "csv", "path": str(path), **data},
    }


def test_tab_in_an_stsb_sentence(check, tmp_path: Path) -> None:
    row = "main-news\theadlines\t2016\t0001\t{}\tA man plays.\tA man is playing.\n"
    write(
        tmp_path / "STS-B" / "sts-train.csv",
        row.format("5.0") + row.format("1.0").replace("A man plays.", "A\tman"),
    )
    write(tmp_path / "STS-B" / "sts-dev.csv", row.format("2.0"))
    task = {
        "name": "stsb",
        "type": "regression",
        "data": {"format": "glue", "task": "STS-B", "path": str(tmp_path / "STS-B")},
    }
    fails(
        check(task),
        f"{tmp_path / 'STS-B' / 'sts-train.csv'}:2: row has 8 tab-separated fields, expected 7 or 9",
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused(check, tmp_path: Path) -> None:
    write(tmp_path / "d" / "train.csv", "text,label\na,x\nb,y\n")
    os.mkfifo(tmp_path / "d" / "dev.csv")
    fails(
        check(csv_task(tmp_path / "d")),
        f"{tmp_path / 'd' / 'dev.csv'}: is a FIFO (named pipe), not a regular file",
    )


def test_parquet_list_column_as_text(check, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p").mkdir()
    pq.write_table(
        pa.table({"text": [["a", "b"], ["c"]], "label": ["x", "y"]}), tmp_path / "p" / "train.parquet"
    )
    task = {**csv_task(tmp_path / "p"), "data": {"format": "parquet", "path": str(tmp_path / "p")}}
    fails(
        check(task),
        f"{tmp_path / 'p' / 'train.parquet'}:1 (field 'text'): expected text (a string), got a list",
    )


def test_bad_new_options_are_config_errors(check, tmp_path: Path) -> None:
    write(tmp_path / "d" / "train.csv", "text,label\na,x\nb,y\n")
    fails(
        check(csv_task(tmp_path / "d", encoding="latin-9x")),
        "tasks.0.data.encoding",
        "unknown encoding 'latin-9x'",
    )
    fails(check(csv_task(tmp_path / "d", dev_from_train=2)), "tasks.0.data.dev_from_train", "between 0 and 1")


def test_dev_from_train_with_a_dev_file(check, tmp_path: Path) -> None:
    write(tmp_path / "d" / "train.csv", "text,label\na,x\nb,y\n")
    write(tmp_path / "d" / "dev.csv", "text,label\na,x\n")
    fails(
        check(csv_task(tmp_path / "d", dev_from_train=0.5)),
        "tasks.t.data.dev_from_train: the data already has a dev split",
    )


def test_report_fits_80_columns_and_warns_about_unseen_labels(check, tmp_path: Path) -> None:
    long = "a_label_name_far_too_long_for_a_table_cell_that_shares_its_row_with_seven_columns"
    write(
        tmp_path / "d" / "train.csv",
        "text,label\n" + "".join(f"t{i},{lab}\n" for i, lab in enumerate(["pos", "neg", long] * 3)),
    )
    write(tmp_path / "d" / "dev.csv", "text,label\nx,pos\ny,meh\nz,new_one\n")
    code, out, err = check(csv_task(tmp_path / "d"))
    assert code == 0, out + err
    assert max(len(line) for line in out.splitlines()) <= 80
    first_cells = "".join(line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│"))
    assert long in first_cells  # folded over lines of its own cell, whole when read down the column
    assert "*meh" in first_cells and "*new_one" in first_cells  # unseen labels marked in the label table
    assert "warning: task 't': dev has 2 label(s) not in train: [meh, new_one]" in " ".join(err.split())
    code, out, err = check(csv_task(tmp_path / "d"), json_out=True)
    assert code == 0
    report = json.loads(out)
    assert report["t"]["dev"]["unseen_in_train"] == ["meh", "new_one"]
    assert report["t"]["train"]["labels"] == {long: 3, "neg": 3, "pos": 3}
    assert "unseen_in_train" not in report["t"]["train"]


def test_lines_label_map_and_dev_from_train_end_to_end(check, tmp_path: Path) -> None:
    # TweetEval-style: text and label ids in separate files, names in mapping.txt, no dev split
    texts = [f"tweet number {i}" for i in range(20)]
    write(tmp_path / "te" / "train_text.txt", "\n".join(texts) + "\n")
    write(tmp_path / "te" / "train_labels.txt", "\n".join(str(i % 2) for i in range(20)) + "\n")
    write(tmp_path / "te" / "mapping.txt", "0\tnegative\n1\tpositive\n")
    task = {
        "name": "sent",
        "type": "classification",
        "data": {
            "format": "lines",
            "path": str(tmp_path / "te"),
            "field_files": {"text": "{split}_text.txt", "label": "{split}_labels.txt"},
            "label_map": "mapping.txt",
            "dev_from_train": 0.2,
        },
    }
    code, out, err = check(task, json_out=True)
    assert code == 0, out + err
    report = json.loads(out)
    assert report["sent"]["train"]["labels"] == {"negative": 8, "positive": 8}
    assert report["sent"]["dev"]["labels"] == {"negative": 2, "positive": 2}
