"""Data formats users bring (issue 15, section 6) and the reader faults of sections 2 and 3.

Each test writes a small file shaped like a real data set (GLUE, TREC, TweetEval, ATIS, AG News, CoNLL) and
checks the rows, or the one clear error naming the file, line or field.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from mtfuse.config import DataConfig, RunConfig
from mtfuse.errors import ConfigError, DataError
from mtfuse.tasks.prepare import read_task_rows, task_splits
from mtfuse.tasks.readers import READERS, carve_dev, read_split
from tests.helpers.cli import write


def run_config(task: dict) -> RunConfig:
    return RunConfig.model_validate({"tasks": [{"name": "t", **task}]})


# ------------------------------------------------------------------------------- GLUE tsv: a tab in a text


def test_stsb_tab_inside_a_sentence_is_an_error(tmp_path: Path) -> None:
    good = "main-news\theadlines\t2016\t0001\t5.000\tA man plays.\tA man is playing.\n"
    sources = "\tEurope Media Monitor\tEurope Media Monitor\n"
    tabbed = "main-news\theadlines\t2016\t0002\t1.000\tA cat\tsits.\tA dog runs.\n"  # 8 fields
    write(tmp_path / "STS-B" / "sts-dev.csv", good + good.rstrip("\n") + sources + tabbed)
    data = DataConfig(format="glue", task="STS-B", path=str(tmp_path / "STS-B"))
    with pytest.raises(DataError, match=r"sts-dev.csv:3: row has 8 tab-separated fields, expected 7 or 9"):
        read_split(data, "dev")
    write(tmp_path / "STS-B" / "sts-dev.csv", good + good.rstrip("\n") + sources)
    rows = read_split(data, "dev")  # 7 fields, and 9 with the two trailing source columns: both fine
    assert [r["sentence2"] for r in rows] == ["A man is playing."] * 2


def test_glue_header_row_with_a_tab_in_text(tmp_path: Path) -> None:
    write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tc\tentailment\n")
    data = DataConfig(format="glue", task="RTE", path=str(tmp_path / "RTE"))
    with pytest.raises(DataError, match=r"train.tsv:2: row has 5 tab-separated fields, expected 4 \(a tab"):
        read_split(data, "train")


def test_generic_tsv_tab_in_text(tmp_path: Path) -> None:
    write(tmp_path / "train.tsv", "text\tlabel\nfine\tpos\nhas\ta tab\tneg\n")
    with pytest.raises(DataError, match=r"train.tsv:3: too many fields \(3\) .* \(a tab inside a text field"):
        read_split(DataConfig(format="tsv", path=str(tmp_path)), "train")


# --------------------------------------------------------------------------------- not a regular file


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl", "parquet", "conll", "lines"])
def test_fifo_is_refused_not_read(tmp_path: Path, fmt: str) -> None:
    fifo = tmp_path / f"train.{fmt}"
    os.mkfifo(fifo)
    data = DataConfig(format=fmt, files={"train": str(fifo)})
    result: list[BaseException] = []

    def read() -> None:
        try:
            read_split(data, "train")
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout=20)
    if t.is_alive():  # unblock the reader so the test process can end, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert len(result) == 1 and isinstance(result[0], DataError), result
    assert (
        str(result[0])
        == f"{fifo}: is a FIFO (named pipe), not a regular file; data must be read from regular files"
    )


def test_directory_named_like_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train.csv").mkdir()
    with pytest.raises(DataError, match=r"train.csv: is a directory, not a regular file"):
        read_split(DataConfig(format="csv", path=str(tmp_path)), "train")


# --------------------------------------------------------------------------------------- CoNLL and BOMs


def test_conll_bom_only_line_is_skipped(tmp_path: Path) -> None:
    # Two files concatenated: the second one's BOM sits alone on a line, or in front of its first token.
    text = "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\ufeff\n\ufeffPeter NNP B-NP B-PER\nsaid VBD B-VP O\n"
    write(tmp_path / "train.txt", text)
    rows = read_split(DataConfig(format="conll", path=str(tmp_path)), "train")
    assert [r["tokens"] for r in rows] == [["EU", "rejects"], ["Peter", "said"]]
    assert rows[1]["_where"] == f"{tmp_path}/train.txt:5"
    write(tmp_path / "train.txt", "EU NNP B-NP B-ORG\n\ufeff\nrejects VBZ B-VP O\n")  # inside a sentence
    rows = read_split(DataConfig(format="conll", path=str(tmp_path)), "train")
    assert [r["tokens"] for r in rows] == [["EU", "rejects"]]


def test_bom_only_line_in_jsonl_is_skipped(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '{"text": "a"}\n\ufeff\n\ufeff{"text": "b"}\n')
    rows = read_split(DataConfig(format="jsonl", path=str(tmp_path)), "train")
    assert [r["text"] for r in rows] == ["a", "b"]


# -------------------------------------------------------------------------------- a partial files: map


def test_partial_files_map_does_not_pick_up_default_names(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "text,label\nold,a\n")  # a stale default-named file beside the data
    write(tmp_path / "dev.csv", "text,label\nold,a\n")
    write(tmp_path / "mine.csv", "text,label\nnew,b\n")
    data = DataConfig(format="csv", path=str(tmp_path), files={"train": "mine.csv"})
    assert READERS.get("csv").splits(data) == ["train"]
    with pytest.raises(DataError, match=r"split 'dev' not found .*available: \['train'\].*data.files lists"):
        read_split(data, "dev")
    glue = tmp_path / "RTE"
    write(glue / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    write(glue / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    write(glue / "my_dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tc\td\tentailment\n")
    data = DataConfig(format="glue", task="RTE", path=str(glue), files={"dev": "my_dev.tsv"})
    assert READERS.get("glue").splits(data) == ["dev"]


# ----------------------------------------------------------------------------- csv / tsv without header


def test_csv_without_header_named_by_columns(tmp_path: Path) -> None:
    # AG News: "class id","title","description", no header, ids 1-4 named in classes.txt
    write(
        tmp_path / "train.csv",
        '"3","Wall St. Bears","Short-sellers, Wall Street\'s dwindling band"\n"4","Chips","New chips"\n',
    )
    data = DataConfig(format="csv", path=str(tmp_path), header=False, columns=["label", "title", "text"])
    rows = read_split(data, "train")
    assert rows[0] == {
        "label": "3",
        "title": "Wall St. Bears",
        "text": "Short-sellers, Wall Street's dwindling band",
        "_where": f"{tmp_path}/train.csv:1",
    }
    write(tmp_path / "dev.csv", '"1","x","y"\n"2","only two"\n')
    with pytest.raises(DataError, match=r"dev.csv:2: too few fields \(2\) for data.columns \['label'"):
        read_split(data, "dev")


def test_tsv_without_header_by_index(tmp_path: Path) -> None:
    write(tmp_path / "train.tsv", "src\t1\t*\tThe book was read.\nsrc\t0\t*\tRead book the.\n")  # CoLA
    rows = read_split(DataConfig(format="tsv", path=str(tmp_path), header=False), "train")
    assert rows[1] == {
        "0": "src",
        "1": "0",
        "2": "*",
        "3": "Read book the.",
        "_where": f"{tmp_path}/train.tsv:2",
    }
    picked = DataConfig(format="tsv", path=str(tmp_path), header=False, columns={"text": 3, "label": 1})
    assert read_split(picked, "train")[0] == {
        "text": "The book was read.",
        "label": "1",
        "_where": f"{tmp_path}/train.tsv:1",
    }
    far = DataConfig(format="tsv", path=str(tmp_path), header=False, columns={"text": 7})
    with pytest.raises(DataError, match=r"train.tsv:1: 4 fields, but data.columns puts 'text' at index 7"):
        read_split(far, "train")
    write(tmp_path / "dev.tsv", "src\t1\t*\tok\nsrc\t1\t*\ta\ttab\n")
    with pytest.raises(
        DataError, match=r"dev.tsv:2: too many fields \(5\) for the 4 fields of the file's first row"
    ):
        read_split(DataConfig(format="tsv", path=str(tmp_path), header=False), "dev")


def test_encoding_delimiter_and_quoting(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "text;label\ncaf\xe9 cr\xe8me;pos\n".encode("iso-8859-1"))
    with pytest.raises(DataError, match=r"train.csv:2: not valid UTF-8 \(byte 0xe9\).*data.encoding"):
        read_split(DataConfig(format="csv", path=str(tmp_path), delimiter=";"), "train")
    data = DataConfig(format="csv", path=str(tmp_path), delimiter=";", encoding="ISO-8859-1")
    assert read_split(data, "train")[0]["text"] == "café crème"
    write(tmp_path / "q.tsv", 'text\tlabel\n"a\tquoted"\tpos\n"open\tneg\n')
    quoted = DataConfig(format="tsv", files={"train": str(tmp_path / "q.tsv")}, quoting=True)
    with pytest.raises(DataError, match=r"q.tsv:3: too few fields"):  # the open quote eats the line end
        read_split(quoted, "train")
    write(tmp_path / "q.tsv", 'text\tlabel\n"a\tquoted"\tpos\n')
    assert read_split(quoted, "train")[0]["text"] == "a\tquoted"
    write(tmp_path / "p.csv", 'text,label\n"half,pos\n')
    plain = DataConfig(format="csv", files={"train": str(tmp_path / "p.csv")}, quoting=False)
    assert read_split(plain, "train")[0]["text"] == '"half'


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
        ({"delimiter": "::"}, "must be one character"),
        ({"columns": ["a", "b"]}, "add header: false"),
        ({"header": False, "columns": ["a", "a"]}, "name each column once"),
        ({"pattern": "(unclosed"}, "not a valid regular expression"),
        ({"pattern": r"\S+ .*"}, "has no named group"),
        ({"dev_from_train": 0}, "between 0 and 1"),
        ({"dev_from_train": 1.0}, "between 0 and 1"),
        ({"field_files": {"text": "train.txt"}}, "must contain {split}"),
    ],
)
def test_new_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DataConfig(format="csv", **options)


# ------------------------------------------------------------------------------------ format 'lines'


def test_lines_with_a_pattern_trec_style(tmp_path: Path) -> None:
    trec = "DESC:manner How did serfdom develop in and then leave Russia ?\nENTY:cremat What films featured Lugosi ?\n"
    write(tmp_path / "train.txt", trec.encode("iso-8859-1"))
    coarse = r"^(?P<label>[^:]+):(?P<fine>\S+) (?P<text>.*)$"
    data = DataConfig(format="lines", path=str(tmp_path), pattern=coarse, encoding="iso-8859-1")
    assert READERS.get("lines").defaults(data) == (["text"], "label")
    assert read_split(data, "train") == [
        {
            "label": "DESC",
            "fine": "manner",
            "text": "How did serfdom develop in and then leave Russia ?",
            "_where": f"{tmp_path}/train.txt:1",
        },
        {
            "label": "ENTY",
            "fine": "cremat",
            "text": "What films featured Lugosi ?",
            "_where": f"{tmp_path}/train.txt:2",
        },
    ]
    write(tmp_path / "dev.txt", "DESC:def What is a prism ?\nno label here\n")
    with pytest.raises(DataError, match=r"dev.txt:2: line 'no label here' does not match data.pattern"):
        read_split(data, "dev")


def test_lines_plain_text(tmp_path: Path) -> None:
    write(tmp_path / "test.txt", "first line\n\nsecond line\n")
    rows = read_split(DataConfig(format="lines", path=str(tmp_path)), "test")
    assert [(r["text"], r["_where"]) for r in rows] == [
        ("first line", f"{tmp_path}/test.txt:1"),
        ("second line", f"{tmp_path}/test.txt:3"),
    ]


def test_lines_field_files_tweeteval_style(tmp_path: Path) -> None:
    for split in ("train", "val"):
        write(tmp_path / f"{split}_text.txt", "I love it\nso angry\n@user meh\n")
        write(tmp_path / f"{split}_labels.txt", "1\n0\n2\n")
    data = DataConfig(
        format="lines",
        path=str(tmp_path),
        field_files={"text": "{split}_text.txt", "label": "{split}_labels.txt"},
        splits={"dev": "val"},
    )
    assert READERS.get("lines").splits(data) == ["train", "dev"]
    rows = read_split(data, "dev")
    assert rows[1] == {"text": "so angry", "label": "0", "_where": f"{tmp_path}/val_text.txt:2"}
    write(tmp_path / "val_labels.txt", "1\n0\n")
    with pytest.raises(DataError, match=r"val_labels.txt: 2 lines, but .*val_text.txt has 3; .*aligned"):
        read_split(data, "dev")
    write(tmp_path / "val_labels.txt", "1\n\n2\n")
    with pytest.raises(DataError, match=r"val_labels.txt:2: blank line, but line 2 of .*val_text.txt is not"):
        read_split(data, "dev")
    (tmp_path / "val_labels.txt").unlink()
    with pytest.raises(DataError, match=r"file not found: .*val_labels.txt \(field 'label' of split 'dev'\)"):
        READERS.get("lines").splits(data)


def test_lines_field_files_atis_style(tmp_path: Path) -> None:
    for split in ("train", "valid"):
        write(tmp_path / split / "seq.in", "show flights from boston\n")
        write(tmp_path / split / "seq.out", "O O O B-fromloc\n")
        write(tmp_path / split / "label", "atis_flight\n")
    data = DataConfig(
        format="lines",
        path=str(tmp_path),
        field_files={"tokens": "{split}/seq.in", "tags": "{split}/seq.out", "intent": "{split}/label"},
        splits={"dev": "valid"},
    )
    assert READERS.get("lines").defaults(data) == (["tokens"], "tags")
    assert read_split(data, "dev")[0]["tags"] == "O O O B-fromloc"


# ------------------------------------------------------------------------------------- label id maps


def _tweeteval(tmp_path: Path, mapping: str, name: str = "mapping.txt", **extra: object) -> RunConfig:
    write(tmp_path / "train.csv", "text,label\nI love it,1\nso angry,0\nhappy,1\nmad,0\n")
    write(tmp_path / name, mapping)
    return run_config(
        {
            "type": "classification",
            "text_fields": ["text"],
            "label_field": "label",
            "data": {"format": "csv", "path": str(tmp_path), "label_map": name, **extra},
        }
    )


@pytest.mark.parametrize(
    ("mapping", "name", "extra"),
    [
        ("0\tanger\n1\tjoy\n", "mapping.txt", {}),  # TweetEval mapping.txt
        ("anger\njoy\n", "classes.txt", {}),  # one name a line, ids from 0
        ("none\nanger\njoy\n", "classes.txt", {"label_map_start": -1}),
        (json.dumps({"0": "anger", "1": "joy"}), "map.json", {}),
        (json.dumps(["anger", "joy"]), "map.json", {}),
    ],
)
def test_label_ids_mapped_to_names(tmp_path: Path, mapping: str, name: str, extra: dict) -> None:
    cfg = _tweeteval(tmp_path, mapping, name, **extra)
    assert [r["label"] for r in read_task_rows(cfg, "t", "train")] == ["joy", "anger", "joy", "anger"]


def test_label_map_inline_and_one_based(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", '"3","a"\n"1","b"\n')
    cfg = run_config(
        {
            "type": "classification",
            "text_fields": ["text"],
            "label_field": "label",
            "data": {
                "format": "csv",
                "path": str(tmp_path),
                "header": False,
                "columns": ["label", "text"],
                "label_map": {1: "World", 2: "Sports", 3: "Business", 4: "Sci/Tech"},
            },
        }
    )
    assert [r["label"] for r in read_task_rows(cfg, "t", "train")] == ["Business", "World"]
    write(tmp_path / "classes.txt", "World\nSports\nBusiness\nSci/Tech\n")  # AG News classes.txt: ids 1-4
    cfg.tasks[0].data.label_map, cfg.tasks[0].data.label_map_start = "classes.txt", 1
    assert [r["label"] for r in read_task_rows(cfg, "t", "train")] == ["Business", "World"]


def test_label_map_errors(tmp_path: Path) -> None:
    cfg = _tweeteval(tmp_path, "0\tanger\n")
    with pytest.raises(
        DataError, match=r"train.csv:2 \(field 'label'\): label id '1' is not in the label map mapping.txt"
    ):
        read_task_rows(cfg, "t", "train")
    cfg = _tweeteval(tmp_path, "0\tanger\njoy\n")
    with pytest.raises(DataError, match=r"mapping.txt:2: expected 'ID NAME'"):
        read_task_rows(cfg, "t", "train")
    cfg = _tweeteval(tmp_path, "0\tanger\n0\tjoy\n")
    with pytest.raises(DataError, match=r"mapping.txt:2: label id 0 given twice"):
        read_task_rows(cfg, "t", "train")
    cfg = _tweeteval(tmp_path, "0\tjoy\n1\tjoy\n")
    with pytest.raises(DataError, match=r"label name 'joy' is given to ids 0 and 1"):
        read_task_rows(cfg, "t", "train")


def test_label_map_on_token_tags(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", json.dumps({"tokens": ["Paris", "is"], "tags": [1, 0]}) + "\n")
    write(tmp_path / "tags.txt", "O\nB-LOC\n")
    cfg = run_config(
        {
            "type": "token_classification",
            "data": {"format": "jsonl", "path": str(tmp_path), "label_map": "tags.txt"},
            "text_fields": ["tokens"],
            "label_field": "tags",
        }
    )
    assert read_task_rows(cfg, "t", "train")[0]["tags"] == ["B-LOC", "O"]


# ------------------------------------------------------------------------------------- dev from train


def _classes(tmp_path: Path, counts: dict[str, int], **data: object) -> RunConfig:
    lines = ["text,label"] + [f"{lab} example {i},{lab}" for lab, n in counts.items() for i in range(n)]
    write(tmp_path / "train.csv", "\n".join(lines) + "\n")
    write(tmp_path / "test.csv", "text,label\nx,a\n")
    return run_config(
        {
            "type": "classification",
            "text_fields": ["text"],
            "label_field": "label",
            "data": {"format": "csv", "path": str(tmp_path), "dev_from_train": 0.2, **data},
        }
    )


def test_dev_from_train_is_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    cfg = _classes(tmp_path, {"a": 60, "b": 30, "c": 10})
    assert task_splits(cfg.tasks[0]) == ["train", "dev", "test"]
    train, dev = read_task_rows(cfg, "t", "train"), read_task_rows(cfg, "t", "dev")
    assert len(train) == 80 and len(dev) == 20
    assert Counter(r["label"] for r in dev) == {"a": 12, "b": 6, "c": 2}  # every class keeps its share
    assert not {r["_where"] for r in train} & {r["_where"] for r in dev}
    assert [r["_where"] for r in read_task_rows(cfg, "t", "dev")] == [
        r["_where"] for r in dev
    ]  # same every time
    assert dev == sorted(dev, key=lambda r: int(r["_where"].rsplit(":", 1)[1]))  # file order kept
    cfg.tasks[0].data.dev_seed = 1
    assert [r["_where"] for r in read_task_rows(cfg, "t", "dev")] != [r["_where"] for r in dev]
    assert len(read_task_rows(cfg, "t", "test")) == 1


def test_dev_from_train_regression_is_a_plain_random_share(tmp_path: Path) -> None:
    cfg = _classes(tmp_path, {"a": 7, "b": 3})
    cfg.tasks[0].type = "regression"
    write(tmp_path / "train.csv", "text,label\n" + "".join(f"t{i},{i / 10}\n" for i in range(10)))
    assert len(read_task_rows(cfg, "t", "dev")) == 2 and len(read_task_rows(cfg, "t", "train")) == 8


def test_dev_from_train_refuses_a_data_set_with_dev(tmp_path: Path) -> None:
    cfg = _classes(tmp_path, {"a": 5, "b": 5})
    write(tmp_path / "dev.csv", "text,label\nx,a\n")
    with pytest.raises(ConfigError, match=r"tasks.t.data.dev_from_train: the data already has a dev split"):
        read_task_rows(cfg, "t", "dev")


def test_carve_dev_rounding_and_small_sets() -> None:
    rows = [{"y": y} for y in "aaaaaaab"]
    assert len(carve_dev(rows, 0.25, 0, "y", "t")) == 2
    assert len(carve_dev(rows[:2], 0.01, 0, None, "t")) == 1  # at least one row, at most n - 1
    with pytest.raises(DataError, match="too few to carve a dev split"):
        carve_dev(rows[:1], 0.5, 0, None, "t")
