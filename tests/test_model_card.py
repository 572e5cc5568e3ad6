"""Model cards: every train, merge, ensemble and stack directory gets a Hub-style README.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mtfuse import rundir
from mtfuse.model_card import DEFAULT_BASE, MAX_LABELS, model_card
from tests.helpers.cli import run_cli
from tests.helpers.fusion import make_data_runs, two_fake_members

CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"}}
  - {name: stsb, type: regression, data: {format: glue, task: STS-B, path: "{data_dir}/glue/STS-B"}}
train: {batch_size: 8, max_steps: 2, tensorboard: false, progress: false}
subset: {train: 16, eval: 12}
"""


def ok(argv: list[object]) -> None:
    code, out, err = run_cli(argv)
    assert code == 0, f"mtfuse {' '.join(map(str, argv))} failed ({code}):\n{out}\n{err}"


def read_card(directory: Path) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a directory's README.md."""
    text = (directory / rundir.MODEL_CARD).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def metric_rows(directory: Path) -> list[str]:
    metrics = json.loads((directory / "metrics.json").read_text())
    return [f"| {t} | {m} | {v:.2f} |" for t, ms in metrics["tasks"].items() for m, v in ms.items()]


def test_card_of_a_training_run(cli_config, tmp_path: Path, shared_data_dir: Path) -> None:
    path, common = cli_config(CONFIG)
    run = tmp_path / "run"
    card = ["card.license=apache-2.0", "card.datasets=[nyu-mll/glue]", "card.language=en"]
    ok(["train", path, *common, *card, "--output", run])
    meta, body = read_card(run)
    assert meta["library_name"] == "mtfuse"
    assert meta["tags"][:2] == ["mtfuse", "multi-task-learning"] and "text-classification" in meta["tags"]
    assert (meta["license"], meta["datasets"], meta["language"]) == ("apache-2.0", ["nyu-mll/glue"], "en")
    assert "base_model" not in meta  # the tiny model is a local folder, not a Hub id
    results = json.loads((run / "results.json").read_text())
    assert results["command"].startswith("mtfuse train ") and "card.license=apache-2.0" in results["command"]
    assert f"```bash\n{results['command']}\n```" in body  # the exact command, shell-quoted
    for row in metric_rows(run):
        assert row in body
    heads = json.loads((run / "model" / "heads.json").read_text())["heads"]
    sst2 = next(h for h in heads if h["task"] == "sst2")
    assert f"| sst2 | classification | {', '.join(sst2['labels'])} |" in body
    assert "| stsb | regression | (a number) |" in body
    train, dev = results["examples"]["train"], results["examples"]["dev"]
    assert train == {"sst2": 16, "stsb": 16} and dev == {"sst2": 12, "stsb": 12}  # the configured subset
    assert f"| sst2 | glue | {shared_data_dir}/glue/SST-2 | {train['sst2']} | {dev['sst2']} |" in body
    assert "subset.train=16" in body
    assert "sharing `hard`" in body and "weighting `static`" in body
    assert rundir.owner(run) == "train"  # the card does not change who wrote the directory

    # --overwrite moves the old card aside with the rest of the run and writes a new one
    ok(["train", path, *common, "train.seed=7", "--output", run, "--overwrite"])
    _, body = read_card(run)
    assert "train.seed=7" in body and "card.license" not in body


def test_cards_of_a_merge(tiny_model_dir: Path, tmp_path: Path) -> None:
    runs = make_data_runs(tmp_path / "runs", tiny_model_dir)
    out = tmp_path / "merged"
    ok(["merge", runs["sent"], runs["topic"], "--method", "ties", "density=0.5", "--output", out])
    meta, body = read_card(out)
    assert meta["tags"][:2] == ["mtfuse", "model-merging"]
    assert "method `ties` (" in body and "density=0.5" in body
    for run in (runs["sent"], runs["topic"]):
        assert f"- input `{run}`" in body
    for row in metric_rows(out):  # rewritten once the merged model was scored
        assert row in body
    assert "merge --from THIS_DIR/merge.json" in body

    bare = tmp_path / "bare"
    ok(["merge", runs["sent"], runs["topic"], "--method", "linear", "--no-evaluate", "--output", bare])
    _, body = read_card(bare)
    assert "Not evaluated yet" in body and "method `linear`" in body


def test_cards_of_an_ensemble_and_a_stack(tmp_path: Path) -> None:
    members = two_fake_members(tmp_path)
    for command, kind, tag in (("ensemble", "ensemble", "ensemble"), ("stack", "stack", "stacking")):
        out = tmp_path / command
        extra = ["--method", "weighted_nll"] if command == "ensemble" else []
        ok([command, *members, *extra, "--folds", "4", "--output", out])
        meta, body = read_card(out)
        assert meta["tags"][:2] == ["mtfuse", tag] and "base_model" not in meta
        assert (
            f"- kind: {kind}, method `{'weighted_nll' if kind == 'ensemble' else 'stack'}`, 4 folds" in body
        )
        for m in members:
            assert f"- member `{m.resolve()}`" in body
        assert "out-of-fold on dev (4-fold" in body
        for row in metric_rows(out):
            assert row in body


def test_card_text_from_records() -> None:
    """The pure builder: Hub id of the packaged model, long label lists shortened, table cells escaped."""
    labels = [f"l{i}" for i in range(MAX_LABELS + 5)]
    results = {
        "kind": "single-task",
        "tasks": ["t"],
        "metrics": {"tasks": {"t": {"accuracy": 75.0}}, "average": 75.0},
        "cost": {"parameters": 1000, "train_seconds": 1.5},
        "command": "mtfuse train 'my config.yaml'",
    }
    config = {
        "model": {"name_or_path": "default", "sharing": {"method": "hard"}},
        "tasks": [{"name": "t", "data": {"format": "csv", "path": "data|x"}}],
        "train": {"select": "last"},
    }
    heads = [{"task": "t", "task_type": "classification", "labels": labels}]
    text = model_card(results, config, name="r", heads=heads)
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == DEFAULT_BASE and "license" not in meta
    assert f", … ({len(labels)} in all)" in text and f"l{MAX_LABELS}," not in text
    assert "data\\|x" in text  # a '|' in a cell does not split the table
    assert "```bash\nmtfuse train 'my config.yaml'\n```" in text
    assert "| t | accuracy | 75.00 |" in text and "| parameters | 1000 |" in text


def test_card_of_a_run_started_from_another() -> None:
    """`model.init_from` (mtfuse finetune): its own kind and tag, and the run it started from."""
    results = {"kind": "fine-tuned", "init_from": "/runs/mt", "tasks": ["t"], "steps": 3, "total_steps": 3}
    config = {"model": {"name_or_path": "org/encoder"}, "tasks": [{"name": "t", "data": {"format": "csv"}}]}
    text = model_card(results, config, name="t", heads=[{"task": "t", "task_type": "regression"}])
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["tags"][:2] == ["mtfuse", "fine-tuned"] and meta["base_model"] == "org/encoder"
    assert "started from the run `/runs/mt`" in text
    assert "Not evaluated yet" in text  # no metrics recorded
