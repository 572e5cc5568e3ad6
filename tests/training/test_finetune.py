"""`mtfuse finetune` (MT-DNN: fine-tune each task from the multi-task encoder and its head, then merge) and the
``model.init_from`` mechanism under it.

One tiny multi-task run (the random 2-layer BERT, two toy jsonl tasks: ``sent`` classification and ``score``
regression, 4 steps) is trained once for the module; every test fine-tunes from it into its own folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtfuse.compare import compare_command
from mtfuse.finetune import finetune_command
from tests.helpers.cli import fails, run_cli
from tests.helpers.fusion import write_toy_data

TASKS = ("sent", "score")
TYPES = {"sent": "classification", "score": "regression", "topic": "classification"}


def toy_task(name: str, files: dict[str, str]) -> dict:
    return {
        "name": name,
        "type": TYPES[name],
        "text_fields": ["text"],
        "label_field": "label",
        "data": {"format": "jsonl", "files": {"train": files["train"], "dev": files["dev"]}},
    }


def ok(argv: list[object]) -> str:
    code, out, err = run_cli(argv)
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    """The data files and a trained multi-task run of ``sent`` and ``score``."""
    root = tmp_path_factory.mktemp("finetune")
    files = write_toy_data(root)
    cfg = {
        "cache_dir": str(root / "cache"),
        "model": {"name_or_path": str(tiny_model_dir)},
        "tasks": [toy_task(t, files[t]) for t in TASKS],
        "subset": {"eval": 12},
        "train": {
            "max_steps": 4,
            "batch_size": 8,
            "lr": 1e-3,
            "eval_batch_size": 16,
            "cpu": True,
            "progress": False,
            "tensorboard": False,
        },
    }
    (root / "mt.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    ok(["train", root / "mt.yaml", "--output", root / "mtl"])
    return {"root": root, "files": files, "mtl": root / "mtl"}


def tensors(run: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / name))


def test_lr0_starts_from_the_multitask_encoder_and_head(toy: dict, tmp_path: Path) -> None:
    """lr=0: every fine-tuned run is, weight for weight, the multi-task encoder plus that task's head, and
    predicts dev exactly as the multi-task run did."""
    mtl, out = toy["mtl"], tmp_path / "ft"
    summary = finetune_command(mtl, out, overrides=["train.lr=0"], merge_method="none")
    assert summary["runs"] == {"sent": "trained", "score": "trained"}
    assert "merged" not in summary["metrics"] and not (out / "merged").exists()
    mtl_encoder, mtl_heads = tensors(mtl, "model.safetensors"), tensors(mtl, "heads.safetensors")
    for task in TASKS:
        run = out / task
        encoder = tensors(run, "model.safetensors")
        assert encoder.keys() == mtl_encoder.keys()
        assert all(torch.equal(encoder[k], mtl_encoder[k]) for k in encoder)
        heads = tensors(run, "heads.safetensors")
        assert heads and all(k.startswith(f"{task}.") for k in heads)
        assert all(torch.equal(heads[k], mtl_heads[k]) for k in heads)
        pred = f"predictions/{task}.jsonl"
        assert (run / pred).read_text() == (mtl / pred).read_text()
        results = json.loads((run / "results.json").read_text())
        assert results["kind"] == "fine-tuned" and results["init_from"] == str(mtl.resolve())
        assert results["tasks"] == [task]
        start = json.loads((run / "log.jsonl").read_text().splitlines()[0])
        assert start["init_heads"] == [task]
        assert summary["metrics"]["fine-tuned"][task] == summary["metrics"]["multi-task"][task]


def test_finetune_then_merge_and_compare(toy: dict, tmp_path: Path) -> None:
    """lr>0 through the CLI: the weights move, merged/ holds every task's head over a task-arithmetic merge
    with the multi-task encoder as base, the table has the three systems; compare lists the fine-tuned runs
    under their own kind (not as single-task references); a rerun skips what is done."""
    mtl, out = toy["mtl"], tmp_path / "ft"
    printed = ok(["finetune", mtl, "--output", out, "train.lr=5e-3", "--merge-param", "scale=0.5"])
    flat = " ".join(printed.split())
    assert all(col in flat for col in ("multi-task", "fine-tuned", "merged"))
    mtl_encoder = tensors(mtl, "model.safetensors")
    for task in TASKS:
        encoder = tensors(out / task, "model.safetensors")
        assert any(not torch.equal(encoder[k], mtl_encoder[k]) for k in encoder)
    merged = out / "merged"
    specs = json.loads((merged / "model" / "heads.json").read_text())["heads"]
    assert sorted(s["task"] for s in specs) == sorted(TASKS)
    record = json.loads((merged / "merge.json").read_text())
    assert record["method"] == "task_arithmetic" and record["params"]["scale"] == 0.5
    assert record["base"] == str((mtl / "model").resolve())
    summary = json.loads((out / "finetune.json").read_text())
    assert set(summary["metrics"]["merged"]) == set(TASKS)
    assert json.loads((merged / "metrics.json").read_text())["tasks"] == summary["metrics"]["merged"]

    result = compare_command([mtl, out], tmp_path / "cmp")
    kinds = {e["name"]: e["kind"] for e in result["entries"]}
    assert kinds == {"mtl": "multi-task", "sent": "fine-tuned", "score": "fine-tuned", "merged": "merged"}
    assert result["reference"] == {}  # no single-task run among them: nothing is normalised

    # rerun: both tasks are finished and the merge is the same request: nothing is trained or merged again
    before = (merged / "model" / "model.safetensors").stat().st_mtime_ns
    again = ok(["finetune", mtl, "--output", out, "train.lr=5e-3", "--merge-param", "scale=0.5"])
    assert " ".join(again.split()).count("skipping it") == len(TASKS)
    assert (merged / "model" / "model.safetensors").stat().st_mtime_ns == before
    # another merge method over the kept one needs --overwrite, and stops before any training
    fails(["finetune", mtl, "--output", out, "--merge-method", "ties"], "merged", "--overwrite")


def test_rerun_skips_finished_tasks_and_resumes_the_rest(toy: dict, tmp_path: Path) -> None:
    """A task with results.json is skipped; one without (but with a checkpoint) goes through train's resume."""
    mtl, out = toy["mtl"], tmp_path / "ft"
    finetune_command(mtl, out, overrides=["train.lr=1e-3"], merge_method="none")
    sent_model = (out / "sent" / "model" / "model.safetensors").read_bytes()
    (out / "score" / "results.json").unlink()  # as if stopped after its last checkpoint
    log: list[str] = []
    summary = finetune_command(mtl, out, overrides=["train.lr=1e-3"], merge_method="none", log=log.append)
    assert summary["runs"] == {"sent": "skipped", "score": "resumed"}
    assert any("sent" in m and "skipping" in m for m in log)
    assert (out / "score" / "results.json").is_file()
    assert (out / "sent" / "model" / "model.safetensors").read_bytes() == sent_model


def test_train_init_from_reuses_the_heads_that_match(toy: dict, tmp_path: Path, tiny_model_dir: Path) -> None:
    """`mtfuse train CONFIG model.init_from=RUN` with lr=0: RUN's encoder, RUN's head for the task they share
    (sent), a fresh head for the task RUN lacks (topic); results.json records where it started."""
    files = toy["files"]
    cfg = {
        "cache_dir": str(toy["root"] / "cache"),
        "model": {"name_or_path": str(tiny_model_dir)},
        "tasks": [toy_task("sent", files["sent"]), toy_task("topic", files["topic"])],
        "subset": {"eval": 12},
        "train": {"max_steps": 2, "lr": 0, "cpu": True, "progress": False, "tensorboard": False},
    }
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out, mtl = tmp_path / "run", toy["mtl"]
    ok(["train", path, "--output", out, f"model.init_from={mtl}"])
    encoder, mtl_encoder = tensors(out, "model.safetensors"), tensors(mtl, "model.safetensors")
    assert all(torch.equal(encoder[k], mtl_encoder[k]) for k in mtl_encoder)
    heads, mtl_heads = tensors(out, "heads.safetensors"), tensors(mtl, "heads.safetensors")
    sent = [k for k in heads if k.startswith("sent.")]
    assert sent and all(torch.equal(heads[k], mtl_heads[k]) for k in sent)
    assert heads["topic.classifier.weight"].shape[0] == 3  # food, sport, tech: its own, fresh head
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "multi-task" and results["init_from"] == str(mtl.resolve())
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["init_from"] == str(mtl.resolve())


def test_init_from_a_head_with_other_labels_is_refused(
    toy: dict, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """`mtfuse train CONFIG model.init_from=RUN`: a task named like one of RUN's, but with other labels,
    stops with one error naming the task and the field, before anything is written."""
    topic = toy_task("topic", toy["files"]["topic"])
    cfg = {
        "cache_dir": str(toy["root"] / "cache"),
        "model": {"name_or_path": str(tiny_model_dir)},
        "tasks": [{**topic, "name": "sent"}],  # 'sent' with the topic labels (food, sport, tech)
        "train": {"max_steps": 1, "cpu": True, "progress": False, "tensorboard": False},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / "run"
    fails(["train", path, "--output", out, f"model.init_from={toy['mtl']}"], "task 'sent'", "'labels'")
    assert not out.exists()


def test_cli_errors_name_the_problem(toy: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    fails(["finetune", tmp_path / "nope", "--output", out], "nope", "not found")
    fails(["finetune", toy["mtl"], "--output", out, "--tasks", "sent,zzz"], "--tasks", "'zzz'")
    fails(["finetune", toy["mtl"], "--output", out, "--merge-method", "bogus"], "--merge-method", "bogus")
    fails(["finetune", toy["mtl"], "--output", toy["mtl"]], "mtfuse train", "--output")
    assert not out.exists()
