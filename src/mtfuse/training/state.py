"""What the loop carries between steps, saved in and restored from checkpoints."""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from mtfuse import rundir
from mtfuse.batching import BatchStream
from mtfuse.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_extra_tensors,
    save_checkpoint,
    step_dirs,
)
from mtfuse.errors import MtfuseError
from mtfuse.model import MultiTaskModel
from mtfuse.weighting.base import Weighting


@dataclass
class LoopState:
    """Everything the loop itself tracks between steps (saved in checkpoints)."""

    step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    samples_seen: int = 0
    epoch_losses: dict[str, list[float]] = field(default_factory=dict)  # task -> [sum, count] this epoch
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Resumable:
    """Every stateful object of a run: written to a checkpoint together, restored together."""

    core: MultiTaskModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Any
    weighting: Weighting
    streams: dict[str, BatchStream]
    acc: Accelerator
    loop: LoopState = field(default_factory=LoopState)
    running: dict[str, list[float]] = field(default_factory=dict)  # task losses since the last log record
    # losses not yet read back to the host: reading one (.item()) every step waits for the device each step,
    # so they are kept as device tensors and read in one go when a log record, an epoch end or a checkpoint
    # needs them (flush_losses)
    pending: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def add_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """Keep a micro-batch's task losses for the next log record and the epoch averages."""
        for n, v in losses.items():
            self.pending.setdefault(n, []).append(v.detach())

    def flush_losses(self) -> None:
        """Read the pending losses back (one transfer per task) into ``running`` and the epoch sums. The
        values are those ``.item()`` gives: the float32 (or bf16) losses widened to Python floats."""
        for n, vs in self.pending.items():
            values = torch.stack([v.float() for v in vs]).tolist() if vs else []
            self.running[n].extend(values)
            acc_sum = self.loop.epoch_losses.setdefault(n, [0.0, 0])
            for value in values:  # one at a time, in order: the same float sum as before
                acc_sum[0] += value
                acc_sum[1] += 1
        self.pending = {}

    def save(self, root: Path, keep: int) -> None:
        self.flush_losses()
        payload = {
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "streams": {n: s.state_dict() for n, s in self.streams.items()},
            "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
            "loop": self.loop.__dict__,
            "running": self.running,
        }
        acc, step = self.acc, self.loop.step
        try:
            save_checkpoint(
                root,
                step,
                self.core,
                self.optimizer,
                payload,
                keep,
                acc.is_main_process,
                acc.process_index,
                acc.wait_for_everyone,
                self.weighting.tensor_state_dict(),
            )
        except OSError as e:
            shutil.rmtree(root / f".tmp-step-{step:07d}", ignore_errors=True)
            prev = latest_checkpoint(root)
            kept = (
                f"the previous checkpoint ({prev.name}) is complete and usable"
                if prev
                else "no earlier checkpoint"
            )
            why = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise MtfuseError(f"{root}: cannot write the checkpoint of step {step} ({why}); {kept}") from None

    def restore(self, root: Path, warn: Any) -> Path:
        """Restore from the newest complete checkpoint that loads; an unreadable one (truncated file) is
        reported and the one before it is used."""
        candidates = [p for _, p in reversed(step_dirs(root))]
        latest = latest_checkpoint(root)
        if latest is not None and latest in candidates:
            candidates.remove(latest)
            candidates.insert(0, latest)
        if not candidates:
            raise MtfuseError(f"{root.parent}: no complete checkpoint to resume from")
        for i, ckpt in enumerate(candidates):
            try:
                saved = load_checkpoint(ckpt, self.core, self.optimizer, self.acc.process_index)
                extra = load_extra_tensors(ckpt)
            except Exception as e:  # a damaged file raises whatever its reader raises
                if i + 1 == len(candidates):
                    raise MtfuseError(
                        f"{ckpt}: cannot resume: {e} (and no earlier checkpoint loads)"
                    ) from None
                warn(
                    f"warning: {ckpt.name} cannot be read ({e}); resuming from {candidates[i + 1].name} instead"
                )
                continue
            self.scheduler.load_state_dict(saved["scheduler"])
            self.sampler.load_state_dict(saved["sampler"])
            self.weighting.load_state_dict(saved["weighting"])
            self.weighting.load_tensor_state_dict(extra)
            for n, s in self.streams.items():
                s.load_state_dict(saved["streams"][n])
            if self.acc.scaler is not None and saved.get("scaler"):
                self.acc.scaler.load_state_dict(saved["scaler"])
            self.loop = LoopState(**saved["loop"])
            # losses of the steps between the last log record and the checkpoint: the next record averages them
            self.running.update(
                {n: list(v) for n, v in saved.get("running", {}).items() if n in self.running}
            )
            return ckpt
        raise AssertionError("unreachable")


def checkpoints_dir(out: Path) -> Path:
    return out / rundir.CHECKPOINTS
