"""The command line's happy paths, in-process through ``mtfuse.cli.main``.

train (multi- and single-task, early stopping, the shipped GLUE config in miniature), evaluate, predict,
data check, and the run directory contract.

Every run uses the tiny random BERT of ``conftest.py``, a seeded subset of the real shared data and a
tokenisation cache of its own, so the whole file takes a few seconds of training.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtfuse import config as config_mod
from tests.helpers.cli import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN_FILES = (
    "config.yaml",
    "model",
    "metrics.json",
    "results.json",
    "predictions",
    "log.jsonl",
    "checkpoints",
)
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}

# Multi-label toy task: the label set follows the words in the text, so the file is self-consistent.
_TOPICS = {
    "goal": "sports",
    "match": "sports",
    "vote": "politics",
    "law": "politics",
    "chip": "tech",
    "app": "tech",
}


def ok(argv: list[object]) -> str:
    code, out, err = run_cli(argv)
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    return out


def write_multilabel(folder: Path, n_train: int = 24, n_dev: int = 8) -> None:
    words = list(_TOPICS)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(n):
                picked = sorted(set(rng.choice(words, size=2).tolist()))
                labels = sorted({_TOPICS[w] for w in picked})
                text = f"item {i} about the " + " and the ".join(picked)
                f.write(json.dumps({"text": text, "labels": labels}) + "\n")


def write_config(path: Path, tasks: list[dict], **top: object) -> Path:
    path.write_text(yaml.safe_dump({**top, "tasks": tasks}, sort_keys=False), encoding="utf-8")
    return path


def glue_task(name: str, type_: str, glue: str) -> dict:
    return {
        "name": name,
        "type": type_,
        "data": {"format": "glue", "task": glue, "path": f"{{data_dir}}/glue/{glue}"},
    }


CONLL = {
    "name": "conll",
    "type": "token_classification",
    "data": {"format": "conll", "path": "{data_dir}/conll2003"},
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def task_mean(metrics: dict[str, float]) -> float:
    return float(np.mean(list(metrics.values())))


def assert_run_layout(run: Path, task_names: list[str]) -> None:
    for name in RUN_FILES:
        assert (run / name).exists(), f"run directory lacks {name}"
    cfg = config_mod.load(run / "config.yaml")
    assert [t.name for t in cfg.tasks] == task_names
    assert (run / "model" / "heads.json").is_file() and (run / "model" / "heads.safetensors").is_file()
    assert sorted(
        json.loads((run / "model" / "heads.json").read_text())["heads"][i]["task"]
        for i in range(len(task_names))
    ) == sorted(task_names)
    pickles = [p for p in run.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    assert not pickles, f"pickle-format files in the run directory: {pickles}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]) == set(task_names)
    expected = float(np.mean([task_mean(m) for m in metrics["tasks"].values()]))
    assert metrics["average"] == pytest.approx(expected, abs=1e-9)
    for m in metrics["tasks"].values():
        assert all(math.isfinite(v) for v in m.values())
    results = json.loads((run / "results.json").read_text())
    for key in (
        "parameters",
        "encoder_parameters",
        "head_parameters",
        "train_seconds",
        "train_samples_per_second",
        "peak_memory_mb",
        "device",
    ):
        assert key in results["cost"], key
    assert (
        results["cost"]["parameters"]
        == results["cost"]["encoder_parameters"] + results["cost"]["head_parameters"]
    )
    assert results["metrics"]["average"] == pytest.approx(metrics["average"])
    assert results["kind"] == ("multi-task" if len(task_names) > 1 else "single-task")
    for name in task_names:
        assert (run / "predictions" / f"{name}.jsonl").is_file()
    log = read_jsonl(run / "log.jsonl")
    events = [r.get("event") for r in log]
    assert events[0] == "start" and events[-1] == "end" and "eval" in events
    assert any(p.name.startswith("step-") for p in (run / "checkpoints").iterdir())


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mt_config(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path, tiny_model_dir: Path) -> Path:
    """Five tasks, one of each type: classification (CoLA), pair (RTE), regression (STS-B), token (CoNLL),
    multi-label (a jsonl file written here, labels as lists)."""
    root = tmp_path_factory.mktemp("mt_config")
    write_multilabel(root / "topics")
    tasks = [
        glue_task("cola", "classification", "CoLA"),
        glue_task("rte", "pair_classification", "RTE"),
        glue_task("stsb", "regression", "STS-B"),
        CONLL,
        {
            "name": "topics",
            "type": "multilabel",
            "data": {"format": "jsonl", "path": str(root / "topics")},
            "text_fields": ["text"],
            "label_field": "labels",
        },
    ]
    return write_config(
        root / "mt.yaml",
        tasks,
        data_dir=str(shared_data_dir),
        model={"name_or_path": str(tiny_model_dir)},
        train={"eval_every": 3, "log_every": 2, "progress": False, "lr": 1e-3},
    )


MT_TASKS = ["cola", "rte", "stsb", "conll", "topics"]
SMALL = ["subset.train=32", "subset.eval=16", "train.max_steps=6", "train.batch_size=8"]


@pytest.fixture(scope="module")
def mt_run(mt_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mt_run")
    run = root / "run"
    out = ok(["train", mt_config, *SMALL, f"cache_dir={root / 'cache'}", "--output", run])
    assert "dev metrics" in out and "average" in out
    return run


# ------------------------------------------------------------------------------------------------ train


def test_train_writes_the_run_directory_contract(mt_run: Path) -> None:
    from transformers import AutoModel

    assert_run_layout(mt_run, MT_TASKS)
    encoder = AutoModel.from_pretrained(str(mt_run / "model"))  # plain HF loading, no mtfuse code
    assert encoder.config.hidden_size == 32
    # one prediction line per (subset) dev example, with gold labels
    dev_sizes = {"cola": 16, "rte": 16, "stsb": 16, "conll": 16, "topics": 8}
    for name, n in dev_sizes.items():
        recs = read_jsonl(mt_run / "predictions" / f"{name}.jsonl")
        assert len(recs) == n, name
        assert [r["index"] for r in recs] == list(range(n))
        assert all("gold" in r for r in recs)
    results = json.loads((mt_run / "results.json").read_text())
    assert results["steps"] == 6 and results["stopped_early"] is False
    saved = config_mod.load(mt_run / "config.yaml")
    assert saved.subset.train == 32 and saved.train.max_steps == 6  # the overrides are what was run


def test_evaluate_reproduces_training_metrics(mt_run: Path) -> None:
    # evaluate scores whole splits unless asked; asked for the training run's dev subset, it gives its metrics
    n = config_mod.load(mt_run / "config.yaml").subset.eval
    out = ok(["evaluate", mt_run, f"subset.eval={n}"])
    assert "dev metrics" in out
    for name in MT_TASKS:
        assert name in out
    written = json.loads((mt_run / "metrics-dev.json").read_text())
    trained = json.loads((mt_run / "metrics.json").read_text())
    assert written["split"] == "dev"
    assert written["tasks"].keys() == trained["tasks"].keys()
    for name, ms in trained["tasks"].items():
        assert written["tasks"][name] == pytest.approx(ms, abs=1e-6), name
    assert written["average"] == pytest.approx(trained["average"], abs=1e-6)


# ---------------------------------------------------------------------------------------------- predict


SENTENCES = ["The cat sat on the mat.", "Him the book gave she.", "Colorless green ideas sleep furiously."]


def _check_classification(recs: list[dict], n: int) -> None:
    assert len(recs) == n
    for r in recs:
        assert r["label"] in r["probs"]
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == max(r["probs"], key=r["probs"].get)


def test_predict_sentence_task_jsonl_and_csv(mt_run: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"sentence": s}) + "\n" for s in SENTENCES), encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    out = ok(["predict", mt_run, "--task", "cola", "--input", src, "--output", dst])
    assert "wrote 3 predictions" in out
    from_jsonl = read_jsonl(dst)
    _check_classification(from_jsonl, 3)
    assert set(from_jsonl[0]["probs"]) == {"0", "1"}  # CoLA's label strings, as in the file

    src_csv = tmp_path / "in.csv"
    with open(src_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "sentence"])
        for i, s in enumerate(SENTENCES):
            w.writerow([i, s])
    dst_csv = tmp_path / "out_csv.jsonl"
    ok(["predict", mt_run, "--task", "cola", "--input", src_csv, "--output", dst_csv])
    from_csv = read_jsonl(dst_csv)
    _check_classification(from_csv, 3)
    assert [r["probs"] for r in from_csv] == [r["probs"] for r in from_jsonl]  # same text, same answer


def test_predict_pair_regression_and_multilabel(mt_run: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"sentence1": "A man is playing a guitar.", "sentence2": "A person plays music."})
        + "\n"
        + json.dumps({"sentence1": "It rains.", "sentence2": "The sun is out."})
        + "\n",
        encoding="utf-8",
    )
    ok(["predict", mt_run, "--task", "rte", "--input", pairs, "--output", tmp_path / "rte.jsonl"])
    recs = read_jsonl(tmp_path / "rte.jsonl")
    _check_classification(recs, 2)
    assert set(recs[0]["probs"]) == {"entailment", "not_entailment"}

    ok(["predict", mt_run, "--task", "stsb", "--input", pairs, "--output", tmp_path / "stsb.jsonl"])
    scores = read_jsonl(tmp_path / "stsb.jsonl")
    assert len(scores) == 2 and all(math.isfinite(r["score"]) for r in scores)

    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"text": "the vote on the law"}) + "\n", encoding="utf-8")
    ok(["predict", mt_run, "--task", "topics", "--input", texts, "--output", tmp_path / "topics.jsonl"])
    (rec,) = read_jsonl(tmp_path / "topics.jsonl")
    assert set(rec["probs"]) == {"politics", "sports", "tech"}
    assert all(0.0 <= p <= 1.0 for p in rec["probs"].values())
    assert set(rec["labels"]) == {k for k, p in rec["probs"].items() if p >= 0.5}


def test_predict_token_task_gives_one_tag_per_word(mt_run: Path, tmp_path: Path) -> None:
    as_list = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    long_words = ["Antidisestablishmentarianism", "in", "Reykjavík", "?"]
    src = tmp_path / "tokens.jsonl"
    src.write_text(
        json.dumps({"tokens": as_list})
        + "\n"
        + json.dumps({"tokens": " ".join(long_words)})
        + "\n",  # a whitespace string is split into words
        encoding="utf-8",
    )
    dst = tmp_path / "tags.jsonl"
    ok(["predict", mt_run, "--task", "conll", "--input", src, "--output", dst])
    first, second = read_jsonl(dst)
    labels = json.loads((mt_run / "model" / "heads.json").read_text())["heads"]
    tag_set = set(next(h for h in labels if h["task"] == "conll")["labels"])
    assert first["tokens"] == as_list and len(first["tags"]) == len(as_list)
    assert second["tokens"] == long_words and len(second["tags"]) == len(long_words)
    assert set(first["tags"]) | set(second["tags"]) <= tag_set
    assert len(first["probs"]) == len(as_list)


def test_predict_refuses_to_replace_an_existing_output(mt_run: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"sentence": "Hello there."}) + "\n", encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    dst.write_text("keep me\n", encoding="utf-8")
    code, _, err = run_cli(["predict", mt_run, "--task", "cola", "--input", src, "--output", dst])
    assert code == 2
    assert "error:" in err and str(dst) in err and "--overwrite" in err and "Traceback" not in err
    assert dst.read_text(encoding="utf-8") == "keep me\n"
    ok(["predict", mt_run, "--task", "cola", "--input", src, "--output", dst, "--overwrite"])
    _check_classification(read_jsonl(dst), 1)


# ------------------------------------------------------------------------------------------- data check


def test_data_check_reports_official_glue_sizes(
    tmp_path: Path, shared_data_dir: Path, tiny_model_dir: Path
) -> None:
    cfg = write_config(
        tmp_path / "check.yaml",
        [glue_task("rte", "pair_classification", "RTE"), glue_task("stsb", "regression", "STS-B")],
        data_dir=str(shared_data_dir),
        model={"name_or_path": str(tiny_model_dir)},
        cache_dir=str(tmp_path / "c"),
    )
    report = json.loads(ok(["data", "check", cfg, "--json"]))
    assert {s: report["rte"][s]["examples"] for s in report["rte"]} == {"train": 2490, "dev": 277}
    assert {s: report["stsb"][s]["examples"] for s in report["stsb"]} == {
        "train": 5749,
        "dev": 1500,
        "test": 1379,
    }
    assert set(report["rte"]["train"]["labels"]) == {"entailment", "not_entailment"}
    assert sum(report["rte"]["dev"]["labels"].values()) == 277
    for split in ("train", "dev", "test"):
        low, high = report["stsb"][split]["range"]
        assert 0.0 <= low < high <= 5.0
    for info in (*report["rte"].values(), *report["stsb"].values()):
        assert 0 < info["tokens_mean"] <= info["tokens_p95"] <= info["tokens_max"]
        assert info["truncated"] >= 0

    table = ok(["data", "check", cfg])  # the table form, from the cache this time
    for text in ("rte", "stsb", "train", "dev", "test", "2490", "277", "5749", "1500", "1379"):
        assert text in table, text


def test_data_check_covers_every_task_type(mt_config: Path, tmp_path: Path) -> None:
    report = json.loads(
        ok(
            [
                "data",
                "check",
                mt_config,
                "subset.train=32",
                "subset.eval=16",
                f"cache_dir={tmp_path}",
                "--json",
            ]
        )
    )
    assert set(report) == set(MT_TASKS)
    for name in MT_TASKS:
        assert report[name]["train"]["examples"] == (24 if name == "topics" else 32)
    assert set(report["conll"]["train"]["labels"]) <= {
        "O",
        "B-PER",
        "I-PER",
        "B-ORG",
        "I-ORG",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
    }
    assert set(report["topics"]["train"]["labels"]) == {"politics", "sports", "tech"}
    assert "range" in report["stsb"]["dev"] and "labels" not in report["stsb"]["dev"]


# ------------------------------------------------------------------------------------ other train paths


def test_single_task_config_same_run_layout(
    shared_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A shipped single-task config goes through the same loop and writes the same run directory; with
    select=best the final model/ scores what the best evaluation scored, whichever step that was."""
    run = tmp_path / "rte"
    ok(
        [
            "train",
            CONFIGS / "rte.yaml",
            f"data_dir={shared_data_dir}",
            f"model.name_or_path={tiny_model_dir}",
            f"cache_dir={tmp_path / 'cache'}",
            "subset.train=32",
            "subset.eval=16",
            "train.max_steps=4",
            "train.batch_size=8",
            "train.lr=5e-3",
            "train.eval_every=2",
            "train.select=best",
            "train.progress=false",
            "--output",
            run,
        ]
    )
    assert_run_layout(run, ["rte"])
    assert len(read_jsonl(run / "predictions" / "rte.jsonl")) == 16
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 4 and results["stopped_early"] is False
    evals = [r for r in read_jsonl(run / "log.jsonl") if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    best = next(r for r in evals if r["average"] == max(e["average"] for e in evals))  # the first best
    assert results["best_step"] == best["step"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["average"] == pytest.approx(best["average"], abs=1e-6)


def test_select_best_with_early_stopping(mt_config: Path, tmp_path: Path) -> None:
    """lr=0: the weights never change, so dev never improves after the first evaluation; patience 1 stops
    the run at the second evaluation and model/ holds the weights of the best (first) one."""
    run = tmp_path / "run"
    ok(
        [
            "train",
            mt_config,
            *SMALL,
            f"cache_dir={tmp_path / 'cache'}",
            "only_tasks=[cola, stsb]",
            "train.lr=0",
            "train.eval_every=1",
            "train.select=best",
            "train.early_stopping_patience=1",
            "--output",
            run,
        ]
    )
    assert_run_layout(run, ["cola", "stsb"])
    results = json.loads((run / "results.json").read_text())
    assert results["stopped_early"] is True
    assert results["steps"] == 2 < results["total_steps"] == 6
    assert results["best_step"] == 1
    assert not (run / "best_model").exists()  # moved into model/
    evals = [r for r in read_jsonl(run / "log.jsonl") if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["average"] == pytest.approx(evals[0]["average"], abs=1e-6)


def test_every_shipped_config_loads(shared_data_dir: Path) -> None:
    from mtfuse.tasks.prepare import task_splits

    paths = sorted(CONFIGS.glob("*.yaml"))
    assert {p.stem for p in paths} >= {"glue", "cola", "sst2", "mrpc", "rte", "stsb", "conll2003", "demo"}
    for path in paths:
        cfg = config_mod.load(path, [f"data_dir={shared_data_dir}"])
        assert cfg.tasks, path
        if path.stem == "demo":
            continue  # its data is written by `mtfuse demo`, not found in shared/data
        for t in cfg.tasks:
            assert {"train", "dev"} <= set(task_splits(t)), (path, t.name)  # dev may be carved from train


def test_glue_config_trains_all_seven_tasks(
    shared_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The issue's "one model for all seven tasks", in miniature: configs/glue.yaml as shipped, tiny model."""
    run = tmp_path / "glue"
    ok(
        [
            "train",
            CONFIGS / "glue.yaml",
            f"data_dir={shared_data_dir}",
            f"model.name_or_path={tiny_model_dir}",
            f"cache_dir={tmp_path / 'cache'}",
            "subset.train=16",
            "subset.eval=8",
            "train.max_steps=3",
            "train.batch_size=8",
            "train.progress=false",
            "train.tensorboard=false",
            "--output",
            run,
        ]
    )
    names = ["cola", "sst2", "mrpc", "rte", "wnli", "stsb", "conll"]
    assert_run_layout(run, names)
    for name in names:
        assert len(read_jsonl(run / "predictions" / f"{name}.jsonl")) == 8
