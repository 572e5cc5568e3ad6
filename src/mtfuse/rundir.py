"""The run directory contract (see DESIGN.md): what train writes and evaluate / predict / compare read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mtfuse import config as config_mod
from mtfuse.checkpoint import write_json_atomic
from mtfuse.errors import MtfuseError

CONFIG = "config.yaml"
MODEL = "model"
METRICS = "metrics.json"
RESULTS = "results.json"
PREDICTIONS = "predictions"
CHECKPOINTS = "checkpoints"
LOG = "log.jsonl"


def looks_like_run(path: Path) -> bool:
    return any((path / n).exists() for n in (CONFIG, MODEL, CHECKPOINTS, METRICS))


def prepare_output(path: Path, resume: bool, overwrite: bool, clear: bool = True) -> None:
    """Refuse to write over an existing run unless asked to resume or overwrite it.

    With ``clear=False`` only check (so a refusal comes before any slow work); the old run's files are removed
    by a later call with ``clear=True``, once the new run's data and model are known to be good."""
    if resume and overwrite:
        raise MtfuseError("--resume and --overwrite exclude each other")
    if path.exists() and not path.is_dir():
        raise MtfuseError(f"{path}: output path exists and is not a directory")
    if resume:
        if not (path / CHECKPOINTS).is_dir():
            raise MtfuseError(f"{path}: nothing to resume (no {CHECKPOINTS}/ folder)")
        return
    if path.is_dir() and looks_like_run(path):
        if not overwrite:
            raise MtfuseError(
                f"{path}: already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        if not clear:
            return
        for n in (CONFIG, MODEL, CHECKPOINTS, METRICS, RESULTS, PREDICTIONS, LOG, "tb", "best_model"):
            p = path / n
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> config_mod.RunConfig:
    if not (run_dir / CONFIG).is_file():
        raise MtfuseError(f"{run_dir}: not a run directory (no {CONFIG})")
    return config_mod.load(run_dir / CONFIG, overrides)


def write_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
