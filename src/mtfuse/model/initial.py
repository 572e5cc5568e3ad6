"""The initial weights of a from-scratch encoder (``model.name_or_path: lstm``), kept in ``RUN_DIR/init/``.

A pretrained encoder is the common base of every run fine-tuned from it; a from-scratch encoder has no such
base, only the random weights it started from. Training writes them to ``init/`` (``save_pretrained`` form:
``config.json`` + ``model.safetensors``), and a run started from another run (``model.init_from``) copies that
run's ``init/``: the origin of the whole lineage. ``mtfuse merge`` then merges from-scratch runs only when they
share an init (the same ``model.lstm.init_seed`` and architecture), and uses it as the base of the task vectors.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import PreTrainedModel

from mtfuse import rundir
from mtfuse.errors import MtfuseError

WEIGHTS = "model.safetensors"


def init_dir(run_dir: Path) -> Path:
    return Path(run_dir) / rundir.INIT


def save_initial(encoder: PreTrainedModel, run_dir: Path, source_run: Path | None = None) -> None:
    """Write ``run_dir/init/``: the source run's ``init/`` when it has one, else ``encoder``'s weights now."""
    target = init_dir(run_dir)
    tmp = target.with_name(f".tmp-{rundir.INIT}")
    if tmp.exists():
        shutil.rmtree(tmp)
    origin = init_dir(source_run) if source_run is not None else None
    if origin is not None and (origin / WEIGHTS).is_file():
        shutil.copytree(origin, tmp)
    else:
        encoder.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def init_fingerprint(run_dir: Path) -> str:
    """sha256 over the tensors (names, dtypes, shapes, bytes) of ``run_dir/init/``: equal for equal inits."""
    path = init_dir(run_dir) / WEIGHTS
    if not path.is_file():
        raise MtfuseError(
            f"{run_dir}: no {rundir.INIT}/{WEIGHTS} (the initial weights of its from-scratch encoder); "
            "merging from-scratch runs needs the init they share: retrain the run with this mtfuse version"
        )
    h = hashlib.sha256()
    with safe_open(str(path), "pt") as f:
        for key in sorted(f.keys()):  # noqa: SIM118 (safe_open has no __iter__)
            t = f.get_tensor(key).contiguous()
            h.update(f"{key}\0{t.dtype}\0{list(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
