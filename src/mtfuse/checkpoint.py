"""Resumable training state, written atomically.

A checkpoint is a folder ``checkpoints/step-NNNNNNN`` holding safetensors for every tensor (model, optimizer
moments, RNG states) and JSON for everything else (scheduler, sampler, weighting, data order, loop state).
It is written under a temporary name, marked COMPLETE, then renamed; ``checkpoints/latest`` is replaced last.
A process killed at any point leaves either the previous checkpoint or the new one, never half of one.
Nothing here unpickles: the files are safetensors and JSON only.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from mtfuse.errors import MtfuseError
from mtfuse.rundir import write_json as write_json_atomic

_STEP_DIR = re.compile(r"^step-(\d+)$")


def fault_point(name: str) -> None:
    """Test hook: signal this process at the named point when MTFUSE_FAULT names it (crash-resume and interrupt
    tests); the signal is SIGKILL unless MTFUSE_FAULT_SIGNAL names another (INT, TERM)."""
    if os.environ.get("MTFUSE_FAULT") == name:
        sig = getattr(signal, "SIG" + os.environ.get("MTFUSE_FAULT_SIGNAL", "KILL"))
        os.kill(os.getpid(), sig)


# ------------------------------------------------------------------------------------------ flattening


def flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        meta: dict[str, Any] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
                meta[k] = {"__tensor__": f"{pid}.{k}"}
            else:
                meta[k] = v
        state[str(pid)] = meta
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {
            k: tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v
            for k, v in st.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    py = random.getstate()
    return tensors, {
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [py[0], list(py[1]), py[2]],
    }


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


# ------------------------------------------------------------------------------------------ save / load


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "COMPLETE").exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if pointer.exists():
        p = root / pointer.read_text().strip()
        if (p / "COMPLETE").exists():
            return p
    found = step_dirs(root)
    return found[-1][1] if found else None


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int,
    is_main: bool,
    rank: int,
    barrier: Any,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint. Every process calls this (each writes its own RNG state); ``barrier`` syncs them."""
    name = f"step-{step:07d}"
    tmp = root / f".tmp-{name}"
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    rt, rm = rng_state()
    save_file(rt, str(tmp / f"rng-{rank}.safetensors"))
    write_json_atomic(tmp / f"rng-{rank}.json", rm)
    barrier()
    if is_main:
        save_model(model, str(tmp / "model.safetensors"))
        fault_point(f"checkpoint-write:{step}")  # a kill here must leave the previous checkpoint usable
        ot, om = flatten_optimizer(optimizer.state_dict())
        save_file(ot, str(tmp / "optimizer.safetensors"))
        write_json_atomic(tmp / "optimizer.json", om)
        write_json_atomic(tmp / "state.json", state)
        if extra_tensors:  # large method state (some gradient methods keep per-task gradient statistics)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()},
                str(tmp / "extra.safetensors"),
            )
        (tmp / "COMPLETE").write_text("ok\n")
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer_tmp = root / "latest.tmp"
        pointer_tmp.write_text(name + "\n")
        os.replace(pointer_tmp, root / "latest")
        for _, old in step_dirs(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int
) -> dict[str, Any]:
    """Restore model, optimizer and this process's RNG states; return the JSON state for the rest."""
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise MtfuseError(
                f"{path}/model.safetensors does not match the model (missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}): was the config changed since this run started?"
            )
        om = json.loads((path / "optimizer.json").read_text())
        optimizer.load_state_dict(unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), om))
        rank_file = path / f"rng-{rank}.safetensors"
        if not rank_file.exists():
            raise MtfuseError(
                f"{path}: no RNG state for process {rank}; resume with the same number of processes"
            )
        set_rng_state(load_file(str(rank_file)), json.loads((path / f"rng-{rank}.json").read_text()))
        return json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError, KeyError, ValueError, RuntimeError) as e:
        raise MtfuseError(f"{path}: cannot resume from this checkpoint: {e}") from None


def load_extra_tensors(path: Path) -> dict[str, torch.Tensor]:
    p = path / "extra.safetensors"
    return load_file(str(p)) if p.exists() else {}
