"""Uncertainty weighting: learned homoscedastic task uncertainty.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and
Semantics", CVPR 2018 (https://arxiv.org/abs/1705.07115).

Each task has a learnable log-variance ``s_t = log sigma_t^2`` and ``L = sum_t (exp(-s_t) L_t + s_t) / 2``:
noisy tasks (large ``sigma``) get small weights and the ``s_t / 2`` term keeps ``sigma`` from growing without
bound. The logged weights are ``exp(-s_t) / 2``. Same formula as TorchJD's ``UW`` (``s = 0`` at the start,
i.e. weights 1/2; LibMTL starts at ``s = -0.5``: ``init_log_var``).

The ``s_t`` are ``nn.Parameter``s (float32, created on the CPU; ``combine`` moves them to the losses' device
inside the graph): the loop must add ``parameters()`` to the optimizer (no weight decay) so they are learned
jointly with the model. Their values are also in ``state_dict`` (JSON), so a resumed run restores them.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from mtfuse.weighting._state import floats
from mtfuse.weighting.base import Weighting, register


class UncertaintyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    init_log_var: float = 0.0


def uncertainty_loss(losses: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``sum_t (exp(-s_t) L_t + s_t) / 2``."""
    return (0.5 * torch.exp(-log_var) * losses + 0.5 * log_var).sum()


@register("uncertainty")
class Uncertainty(Weighting):
    Params = UncertaintyParams

    def __init__(
        self, tasks: list[str], params: UncertaintyParams | None, task_weights: dict[str, float]
    ) -> None:
        super().__init__(tasks, params or UncertaintyParams(), task_weights)
        init = self.params.init_log_var  # type: ignore[union-attr]
        self.log_var = torch.nn.Parameter(torch.full((len(self.tasks),), float(init)))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_var]

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        idx = [self.tasks.index(t) for t in losses]
        stacked = torch.stack(list(losses.values()))
        return uncertainty_loss(stacked, self.log_var.to(stacked.device)[idx])

    def weights(self) -> dict[str, float]:
        w = 0.5 * torch.exp(-self.log_var.detach())
        return dict(zip(self.tasks, map(float, w.tolist()), strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {"log_var": floats(self.log_var)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():  # in place: the optimizer keeps referring to the same parameter
            self.log_var.copy_(torch.tensor(state["log_var"], dtype=self.log_var.dtype))
