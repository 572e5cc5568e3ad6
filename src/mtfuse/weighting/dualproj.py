"""DualProj: the mean gradient projected onto the dual cone of the task gradients.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (https://arxiv.org/abs/2406.16232)
(TorchJD's ``DualProj``); the projection is Equation 11 of Lopez-Paz & Ranzato, "Gradient Episodic Memory for
Continual Learning", NeurIPS 2017.

``d = proj_cone(mean_i g_i)``: the closest vector to the mean gradient that has a non-negative inner product
with every task gradient. ``d = J^T v`` with ``v = argmin v^T Q v s.t. v >= 1/K``, solved exactly as
non-negative least squares on the trace-normalised Gramian (see ``upgrad`` for the conventions vs TorchJD:
``reg_eps`` defaults to 0 here, 1e-4 there).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import combine_rows, gramian, project_dual_cone
from mtfuse.weighting.base import GradientMethod, register
from mtfuse.weighting.upgrad import regularised


def dualproj_weights(gram: torch.Tensor, reg_eps: float = 0.0) -> torch.Tensor:
    """Effective weights ``w`` (float64, CPU) with ``dualproj(G) == w @ G``."""
    K = gram.shape[0]
    u = np.full(K, 1.0 / K)
    Q = regularised(gram, reg_eps)
    return torch.from_numpy(u if Q is None else project_dual_cone(Q, u))


def dualproj(G: torch.Tensor, reg_eps: float = 0.0) -> torch.Tensor:
    """DualProj update for the ``[K, P]`` task gradients ``G``."""
    return combine_rows(dualproj_weights(gramian(G), reg_eps), G)


class DualProjParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reg_eps: float = Field(0.0, ge=0.0)  # TorchJD's default is 1e-4


@register("dualproj")
class DualProj(GradientMethod):
    Params = DualProjParams
    params: DualProjParams

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        w = dualproj_weights(gramian(G), self.params.reg_eps)
        self._record(w)
        return combine_rows(w, G)
