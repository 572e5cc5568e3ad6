"""Bad input through the command line (the issue's section 10).

Each case gets one clear error naming the file, line or field, exit code 2, no traceback, and nothing already
written is overwritten. Data problems are found before the run directory is created.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import fails, run_cli, snapshot, write


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path):
    """A config writer for one task, and the train command that must fail on it without writing a run."""

    class Env:
        root = tmp_path
        out = tmp_path / "run"
        cache = tmp_path / "cache"

        def config(self, task: dict, **top: object) -> Path:
            raw = {
                "data_dir": str(tmp_path),
                "cache_dir": str(self.cache),
                "model": {"name_or_path": str(tiny_model_dir)},
                "tasks": [task],
                "train": {"max_steps": 2, "batch_size": 4, "progress": False},
                **top,
            }
            return write(tmp_path / "cfg.yaml", yaml.safe_dump(raw, sort_keys=False))

        def train_fails(self, task: dict, *expected: str, overrides: tuple[str, ...] = ()) -> str:
            err = fails(["train", self.config(task), *overrides, "--output", self.out], *expected)
            assert not self.out.exists(), "the run directory was created although the input was refused"
            return err

    return Env()


def csv_task(
    folder: str, type_: str = "classification", fields: list[str] | None = None, **extra: object
) -> dict:
    return {
        "name": "t",
        "type": type_,
        "data": {"format": "csv", "path": f"{{data_dir}}/{folder}"},
        "text_fields": fields or ["text"],
        "label_field": "label",
        **extra,
    }


# ----------------------------------------------------------------------------------------------- data


def test_missing_data_file(env) -> None:
    write(env.root / "d" / "train.csv", "text,label\nhello,a\nworld,b\n")
    task = csv_task("d")
    task["data"]["files"] = {"train": "train.csv", "dev": "dev_typo.csv"}
    env.train_fails(task, "file not found", str(env.root / "d" / "dev_typo.csv"))


def test_missing_data_directory(env) -> None:
    task = {
        "name": "rte",
        "type": "pair_classification",
        "data": {"format": "glue", "task": "RTE", "path": "{data_dir}/glue/RTE"},
    }
    env.train_fails(task, "data directory not found", str(env.root / "glue" / "RTE"))


def test_missing_column_csv(env) -> None:
    write(env.root / "d" / "train.csv", "text,lab\nhello,a\nworld,b\n")
    write(env.root / "d" / "dev.csv", "text,lab\nhello,a\n")
    env.train_fails(csv_task("d"), f"{env.root / 'd' / 'train.csv'}:2", "missing column 'label'", "lab")


def test_missing_column_glue_tsv_header(env) -> None:
    glue = env.root / "glue" / "RTE"
    write(
        glue / "train.tsv", "index\tpremise\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tnot_entailment\n"
    )
    write(glue / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    task = {
        "name": "rte",
        "type": "pair_classification",
        "data": {"format": "glue", "task": "RTE", "path": "{data_dir}/glue/RTE"},
    }
    env.train_fails(task, f"{glue / 'train.tsv'}:1", "missing column 'sentence1'", "premise")


def test_empty_split_header_only(env) -> None:
    write(env.root / "d" / "train.csv", "text,label\nhello,a\nworld,b\n")
    write(env.root / "d" / "dev.csv", "text,label\n")
    env.train_fails(csv_task("d"), str(env.root / "d" / "dev.csv"), "no rows", "empty")


def test_dev_label_not_in_train(env) -> None:
    write(env.root / "d" / "train.csv", "text,label\nhello,pos\nworld,neg\n")
    write(env.root / "d" / "dev.csv", "text,label\nfine,pos\nmeh,neutral\n")
    env.train_fails(
        csv_task("d"),
        f"{env.root / 'd' / 'dev.csv'}:3",
        "field 'label'",
        "'neutral'",
        "split 'dev'",
        "neg",
        "pos",
    )


def test_non_numeric_regression_target(env) -> None:
    write(env.root / "d" / "train.csv", "s1,s2,label\na,b,1.5\nc,d,high\n")
    write(env.root / "d" / "dev.csv", "s1,s2,label\na,b,2.0\n")
    task = csv_task("d", "regression", ["s1", "s2"])
    env.train_fails(task, f"{env.root / 'd' / 'train.csv'}:3", "field 'label'", "'high'", "not a number")


def test_conll_line_with_wrong_number_of_columns(env) -> None:
    good = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"
    write(env.root / "ner" / "train.txt", good + "Blackburn NNP B-PER\n")  # line 7: 3 columns, not 4
    write(env.root / "ner" / "valid.txt", good)
    task = {
        "name": "ner",
        "type": "token_classification",
        "data": {"format": "conll", "path": "{data_dir}/ner"},
    }
    env.train_fails(task, f"{env.root / 'ner' / 'train.txt'}:7", "3 columns", "4")


def test_undecodable_bytes(env) -> None:
    write(env.root / "d" / "train.tsv", b"text\tlabel\nhello\ta\nbad \xff\xfe bytes\tb\n")
    write(env.root / "d" / "dev.tsv", "text\tlabel\nhello\ta\n")
    task = {
        "name": "t",
        "type": "classification",
        "data": {"format": "tsv", "path": "{data_dir}/d"},
        "text_fields": ["text"],
        "label_field": "label",
    }
    env.train_fails(task, f"{env.root / 'd' / 'train.tsv'}:3", "not valid UTF-8", "0xff")


# --------------------------------------------------------------------------------------------- config


def test_unknown_config_key(env) -> None:
    write(env.root / "d" / "train.csv", "text,label\nhello,a\nworld,b\n")
    err = env.train_fails(
        csv_task("d"),
        str(env.root / "cfg.yaml"),
        "unknown config key 'train.lrr'",
        overrides=("train.lrr=1",),
    )
    # the valid keys are listed (and survive the console's markup: '[...]' is not a style tag)
    assert "choose from [" in err and "lr," in err and "batch_size" in err


def test_unknown_task_type(env) -> None:
    write(env.root / "d" / "train.csv", "text,label\nhello,a\nworld,b\n")
    err = env.train_fails(
        csv_task("d", "clasification"),
        str(env.root / "cfg.yaml"),
        "tasks.t.type",
        "unknown task type 'clasification'",
    )
    assert "classification" in err.replace("clasification", "")  # the valid choices are listed


def test_model_path_does_not_exist(env) -> None:
    write(env.root / "d" / "train.csv", "text,label\nhello,a\nworld,b\n")
    write(env.root / "d" / "dev.csv", "text,label\nhello,a\n")
    env.train_fails(
        csv_task("d"), "/nonexistent", "no such directory", overrides=("model.name_or_path=/nonexistent",)
    )


def test_missing_config_file(tmp_path: Path) -> None:
    fails(
        ["train", tmp_path / "nope.yaml", "--output", tmp_path / "run"],
        str(tmp_path / "nope.yaml"),
        "not found",
    )
    assert not (tmp_path / "run").exists()


def test_error_exit_code_in_a_real_process(tmp_path: Path) -> None:
    """The installed entry point: exit status 2 and a one-line message, no traceback (process isolation)."""
    cfg = write(tmp_path / "cfg.yaml", "tasks: [{name: t, type: regression, data: {format: csv}}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mtfuse.cli", "data", "check", str(cfg), "train.lrr=1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "unknown config key 'train.lrr'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# -------------------------------------------------------------------------------------- run directory


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    """(config, run directory) of a finished two-step run on a small csv task."""
    root = tmp_path_factory.mktemp("small_run")
    write(
        root / "d" / "train.csv",
        "text,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(16)),
    )
    write(
        root / "d" / "dev.csv", "text,label\n" + "".join(f"other text {i},{'ab'[i % 2]}\n" for i in range(6))
    )
    raw = {
        "data_dir": str(root),
        "cache_dir": str(root / "cache"),
        "model": {"name_or_path": str(tiny_model_dir)},
        "tasks": [csv_task("d")],
        "train": {"max_steps": 2, "batch_size": 4, "progress": False},
    }
    cfg = write(root / "cfg.yaml", yaml.safe_dump(raw, sort_keys=False))
    run = root / "run"
    code, out, err = run_cli(["train", cfg, "--output", run])
    assert code == 0, err
    return cfg, run


def test_output_directory_already_holds_a_run(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, original = small_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    before = snapshot(run)
    assert "metrics.json" in before and "model/heads.safetensors" in before
    fails(["train", cfg, "--output", run], str(run), "already holds a run", "--resume", "--overwrite")
    fails(["train", cfg, "train.seed=7", "--output", run], "already holds a run")
    assert snapshot(run) == before  # byte-identical

    code, _, err = run_cli(["train", cfg, "train.seed=7", "--output", run, "--overwrite"])
    assert code == 0, err
    results = json.loads((run / "results.json").read_text())
    assert results["seed"] == 7 and results["steps"] == 2
    assert (run / "model" / "heads.safetensors").is_file()


def test_overwrite_with_bad_data_keeps_the_old_run(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    """--overwrite replaces a run only once the new one's data and model have been checked."""
    cfg, original = small_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    before = snapshot(run)
    fails(["train", cfg, "tasks.t.label_field=nope", "--output", run, "--overwrite"], "missing column 'nope'")
    fails(["train", cfg, "model.name_or_path=/nonexistent", "--output", run, "--overwrite"], "/nonexistent")
    assert snapshot(run) == before


def test_resume_and_overwrite_together(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, original = small_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    before = snapshot(run)
    fails(["train", cfg, "--output", run, "--resume", "--overwrite"], "--resume and --overwrite")
    assert snapshot(run) == before


def test_predict_unknown_task(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = small_run
    src = write(tmp_path / "in.jsonl", json.dumps({"text": "hello"}) + "\n")
    dst = tmp_path / "out.jsonl"
    fails(["predict", run, "--task", "nope", "--input", src, "--output", dst], "unknown task 'nope'", "[t]")
    assert not dst.exists()


def test_predict_input_missing_field(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = small_run
    src = write(
        tmp_path / "in.jsonl", json.dumps({"text": "hello"}) + "\n" + json.dumps({"txt": "oops"}) + "\n"
    )
    dst = tmp_path / "out.jsonl"
    fails(
        ["predict", run, "--task", "t", "--input", src, "--output", dst], f"{src}:2", "missing column 'text'"
    )
    assert not dst.exists()


def test_predict_missing_input_file(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = small_run
    fails(
        ["predict", run, "--task", "t", "--input", tmp_path / "none.jsonl", "--output", tmp_path / "o.jsonl"],
        str(tmp_path / "none.jsonl"),
        "not found",
    )


def test_evaluate_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "some_folder").mkdir()
    write(tmp_path / "some_folder" / "notes.txt", "hello\n")
    fails(
        ["evaluate", tmp_path / "some_folder"],
        str(tmp_path / "some_folder"),
        "not a run directory",
        "config.yaml",
    )
    assert sorted(p.name for p in (tmp_path / "some_folder").iterdir()) == ["notes.txt"]
    fails(["evaluate", tmp_path / "missing"], str(tmp_path / "missing"), "not a run directory")
    assert not (tmp_path / "missing").exists()
