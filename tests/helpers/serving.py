"""Tiny real run directories for the server and export tests: every task type in one multi-task run (2 steps
on synthetic rows, the tiny random BERT), a second seed, and an ensemble, a stack and a merge of the two."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from tests.helpers.cli import run_cli
from tests.test_task_type_contract import DATA

#: task name -> task type (every registered type; `cls`, `reg` and `multilabel` share the text field)
NAMES = {
    "cls": "classification",
    "pair": "pair_classification",
    "reg": "regression",
    "multilabel": "multilabel",
    "token": "token_classification",
    "mc": "multiple_choice",
}

#: one valid input per task (the task's text fields)
INPUTS = {
    "cls": {"text": "good film great actor"},
    "pair": {"a": "good film", "b": "bad plot"},
    "reg": {"text": "good good great"},
    "multilabel": {"text": "London actor plot"},
    "token": {"tokens": ["London", "is", "not", "Paris"]},
    "mc": {"context": "the film was", "endings": ["good fun", "dull", "a scene"]},
}

_BUILT: dict[str, dict[str, Path]] = {}


def ok(*argv: object) -> str:
    code, out, err = run_cli(list(argv))
    assert code == 0, f"mtfuse {' '.join(map(str, argv))}: exit {code}\n{out}\n{err}"
    return out


def serve_runs(root: Path, tiny_model_dir: Path) -> dict[str, Path]:
    """``{"run", "run2", "ensemble", "stack", "merge"}`` directories under ``root`` (built once per root)."""
    if str(root) in _BUILT:
        return _BUILT[str(root)]
    rng = random.Random(0)
    tasks = []
    for name, ttype in NAMES.items():
        build, fields, label = DATA[ttype]
        files = {}
        for split, n in (("train", 24), ("dev", 12)):
            path = root / "data" / name / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(build(rng)) + "\n" for _ in range(n)), encoding="utf-8")
            files[split] = str(path)
        tasks.append(
            {
                "name": name,
                "type": ttype,
                "data": {"format": "jsonl", "files": files},
                "text_fields": fields,
                "label_field": label,
            }
        )
    cfg = {
        "tasks": tasks,
        "model": {"name_or_path": str(tiny_model_dir)},
        "cache_dir": str(root / "cache"),
        "train": {"batch_size": 8, "max_steps": 2, "lr": 1e-3, "tensorboard": False, "progress": False},
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = {"run": root / "run", "run2": root / "run2"}
    for seed, key in enumerate(("run", "run2")):
        ok("train", root / "cfg.yaml", "--output", out[key], f"train.seed={seed}")
    runs = [out["run"], out["run2"]]
    out["ensemble"], out["stack"], out["merge"] = root / "ens", root / "stack", root / "merged"
    ok("ensemble", *runs, "--method", "mean", "--output", out["ensemble"])
    ok("stack", *runs, "--folds", "2", "--output", out["stack"])
    ok("merge", *runs, "--method", "greedy_soup", "--output", out["merge"], "--no-evaluate")
    _BUILT[str(root)] = out
    return out
