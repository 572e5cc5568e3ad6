"""The run log: one object that writes ``log.jsonl`` and, when enabled, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLog:
    """JSONL records (``{"step": ..., "event": ...}``) and the same numbers as TensorBoard scalars.

    On resume, what was logged after the checkpoint step is dropped (it is about to be redone)."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.path, self.enabled = out / "log.jsonl", enabled
        if enabled and resume_step is not None and self.path.exists():
            kept = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln and json.loads(ln).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # hide what was logged after the checkpoint step (it is redone); that step's own eval is kept
            purge = resume_step + 1 if resume_step is not None else None
            self.tb = SummaryWriter(str(out / "tb"), purge_step=purge)

    def write(self, rec: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def train_record(self, rec: dict[str, Any]) -> None:
        """A record of training losses and the learning rate."""
        self.write(rec)
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step":
                    self.tb.add_scalar(k, v, rec["step"])

    def eval_record(self, rec: dict[str, Any]) -> None:
        """A dev evaluation with task weights, sampling probabilities and the gradient conflict matrix."""
        self.write(rec)
        if self.tb is None:
            return
        step = rec["step"]
        self.tb.add_scalar("dev/average", rec["average"], step)
        for n, ms in rec["metrics"].items():
            for m, v in ms.items():
                self.tb.add_scalar(f"dev/{n}/{m}", v, step)
        for n, p in rec["sampling_probs"].items():
            self.tb.add_scalar(f"sampling/{n}", p, step)
        for n, w in rec["task_weights"].items():
            self.tb.add_scalar(f"weights/{n}", w, step)
        if "gradient_cosine" in rec:
            names, cos = rec["gradient_cosine"]["tasks"], rec["gradient_cosine"]["cosine"]
            for i in range(len(names)):
                for j in range(i + 1, len(names)):
                    self.tb.add_scalar(f"conflict/{names[i]}-{names[j]}", cos[i][j], step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
