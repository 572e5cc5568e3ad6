"""DWA: dynamic weight average.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019
(https://arxiv.org/abs/1803.10704).

``lambda_t = K exp(r_t / T) / sum_k exp(r_k / T)`` with ``r_t = L_t(e-1) / L_t(e-2)``, the ratio of task t's
average training loss over the two previous epochs: tasks whose loss falls slowly get more weight. Weights are
1 during the first two epochs. ``L = sum_t lambda_t L_t``.

Epoch averages: ``combine`` accumulates each task's (detached) loss, and the loop calls ``end_epoch()`` once
at the end of every epoch to turn the sums into that epoch's averages (the choice of TorchJD's ``DWA``, whose
``step()`` is our ``end_epoch``). The loop may pass its own averages instead: ``end_epoch(avg_losses)``.
A task that saw no batch in one of the two epochs keeps all weights at 1 until it has two averages.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting.base import Weighting, register


class DWAParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(2.0, gt=0.0)


def dwa_weights(older: list[float], newer: list[float], temperature: float) -> list[float]:
    """``K softmax((newer / older) / T)``."""
    r = torch.tensor([n / o for n, o in zip(newer, older, strict=True)], dtype=torch.float64)
    return (len(r) * torch.softmax(r / temperature, dim=0)).tolist()


@register("dwa")
class DWA(Weighting):
    Params = DWAParams

    def __init__(self, tasks: list[str], params: DWAParams | None, task_weights: dict[str, float]) -> None:
        super().__init__(tasks, params or DWAParams(), task_weights)
        self.sums = dict.fromkeys(self.tasks, 0.0)
        self.counts = dict.fromkeys(self.tasks, 0)
        self.history: list[dict[str, float]] = []  # the last two epochs' average losses

    def weights(self) -> dict[str, float]:
        if len(self.history) < 2 or any(t not in h for h in self.history for t in self.tasks):
            return dict.fromkeys(self.tasks, 1.0)
        older, newer = ([h[t] for t in self.tasks] for h in self.history)
        w = dwa_weights(older, newer, self.params.temperature)  # type: ignore[union-attr]
        return dict(zip(self.tasks, w, strict=True))

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        w = self.weights()
        for t, loss in losses.items():
            self.sums[t] += float(loss.detach())
            self.counts[t] += 1
        return sum(w[t] * loss for t, loss in losses.items())  # type: ignore[return-value]

    def end_epoch(self, avg_losses: dict[str, float] | None = None) -> None:
        if avg_losses is None:
            avg_losses = {t: self.sums[t] / self.counts[t] for t in self.tasks if self.counts[t]}
        avg = {t: float(v) for t, v in avg_losses.items() if math.isfinite(v)}
        self.history = [*self.history, avg][-2:]
        self.sums = dict.fromkeys(self.tasks, 0.0)
        self.counts = dict.fromkeys(self.tasks, 0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": dict(self.sums),
            "counts": dict(self.counts),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = {t: float(state["sums"][t]) for t in self.tasks}
        self.counts = {t: int(state["counts"][t]) for t in self.tasks}
        self.history = [{t: float(v) for t, v in h.items()} for h in state["history"]]
