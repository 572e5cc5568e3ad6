"""FairGrad: alpha-fair resource allocation between tasks.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (https://arxiv.org/abs/2402.15638),
Algorithm 1 and Equation 4.

The update ``d = w @ G`` gives task i the "utility" ``g_i . d``; alpha-fairness over these utilities gives the
weights as the positive solution of ``(G G^T w)_i = w_i^(-1/alpha)``. ``alpha = 1`` is proportional fairness
(Nash-MTL's condition, without its normalisation and clipping); ``alpha -> inf`` approaches max-min fairness;
``alpha = 0`` is linear scalarisation (uniform weights ``1/K``, as TorchJD does).

Solver: the official code (and TorchJD's ``FairGrad``) run ``scipy.optimize.least_squares`` on the residual
from ``w = 1/K``; here the same fixed point is the minimiser of a strictly convex function, found by damped
Newton steps to machine precision (``_linalg.fair_fixed_point``). If every gradient is zero the update is 0.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import as_np, combine_rows, fair_fixed_point, gramian
from mtfuse.weighting.base import GradientMethod, register


def fairgrad_weights(gram: torch.Tensor, alpha: float = 1.0, max_iters: int = 100) -> torch.Tensor:
    """FairGrad weights (float64, CPU) from the Gramian ``G G^T``."""
    Q = as_np(gram)
    K = Q.shape[0]
    if alpha == 0:
        return torch.full((K,), 1.0 / K, dtype=torch.float64)
    if float(np.trace(Q)) <= 0:
        return torch.zeros(K, dtype=torch.float64)
    return torch.from_numpy(fair_fixed_point(Q, alpha, max_iters))


def fairgrad(G: torch.Tensor, alpha: float = 1.0, max_iters: int = 100) -> torch.Tensor:
    """FairGrad update for the ``[K, P]`` task gradients ``G``."""
    return combine_rows(fairgrad_weights(gramian(G), alpha, max_iters), G)


class FairGradParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(1.0, ge=0.0)  # the paper tunes it per benchmark (e.g. 1, 2, 5, 8)
    max_iters: int = Field(100, ge=1)


@register("fairgrad")
class FairGrad(GradientMethod):
    Params = FairGradParams
    params: FairGradParams

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        w = fairgrad_weights(gramian(G), self.params.alpha, self.params.max_iters)
        self._record(w)
        return combine_rows(w, G)
