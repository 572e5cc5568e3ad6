"""STCH: smooth Tchebycheff scalarisation.

Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective Optimization",
ICML 2024 (https://arxiv.org/abs/2402.19078).

``L = mu log sum_t exp(lambda_t (L_t - z_t) / mu)``: a smooth approximation of the Tchebycheff scalarisation
``max_t lambda_t (L_t - z_t)`` (the worst weighted task), tighter as ``mu`` decreases. ``weights`` are the
preferences ``lambda`` (default ``1/K`` each), ``ideal`` the ideal point ``z`` (default 0). The gradient
weights task t by ``lambda_t softmax(lambda (L - z) / mu)_t``; ``weights()`` logs these from the last step
(``lambda`` before it). Computed with the max subtracted first (stable for small ``mu``). Same as TorchJD's
``STCH``.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.errors import ConfigError
from mtfuse.weighting.base import Weighting, register


class STCHParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mu: float = Field(1.0, gt=0.0)  # the paper tries 0.01, 0.1, 0.5, 1
    weights: dict[str, float] = {}
    ideal: dict[str, float] = {}


def stch_loss(losses: torch.Tensor, prefs: torch.Tensor, ideal: torch.Tensor, mu: float) -> torch.Tensor:
    """``mu logsumexp(prefs (losses - ideal) / mu)``."""
    y = prefs.to(losses) * (losses - ideal.to(losses))
    top = y.max().detach()
    return mu * torch.logsumexp((y - top) / mu, dim=0) + top


@register("stch")
class STCH(Weighting):
    Params = STCHParams

    def __init__(self, tasks: list[str], params: STCHParams | None, task_weights: dict[str, float]) -> None:
        p = params or STCHParams()
        super().__init__(tasks, p, task_weights)
        unknown = sorted((set(p.weights) | set(p.ideal)) - set(self.tasks))
        if unknown:
            raise ConfigError(
                f"weighting.weights/ideal name unknown tasks {unknown}; choose from {self.tasks}"
            )
        self.p = p
        self.prefs = {t: float(p.weights.get(t, 1.0 / len(self.tasks))) for t in self.tasks}
        self._w = dict(self.prefs)

    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        stacked = torch.stack(list(losses.values()))
        prefs = torch.tensor([self.prefs[t] for t in losses], dtype=torch.float64)
        ideal = torch.tensor([self.p.ideal.get(t, 0.0) for t in losses], dtype=torch.float64)
        y = prefs * (stacked.detach().to("cpu", torch.float64) - ideal)
        eff = prefs * torch.softmax(y / self.p.mu, dim=0)
        self._w.update(zip(losses, map(float, eff.tolist()), strict=True))
        return stch_loss(stacked, prefs, ideal, self.p.mu)
