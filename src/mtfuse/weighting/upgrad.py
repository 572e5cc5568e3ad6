"""UPGrad: unconflicting projection of gradients (Jacobian descent).

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (https://arxiv.org/abs/2406.16232),
Section 3 (TorchJD's ``UPGrad``).

Every task gradient is projected onto the dual cone of all of them (the vectors with a non-negative inner
product with every task gradient) and the projections are averaged:
``d = (1/K) sum_i proj_cone(g_i)``. Hence ``d . g_j >= 0`` for every task j: no task is locally worsened.
Each projection is ``J^T v`` with ``v = argmin v^T Q v s.t. v >= e_i / K`` (Proposition 1), a small quadratic
program solved here exactly as non-negative least squares (``scipy.optimize.nnls``;
``_linalg.project_dual_cone``) on the trace-normalised Gramian.

Conventions vs TorchJD: TorchJD solves the QP with quadprog after adding ``reg_eps = 1e-4`` to the diagonal of
the trace-normalised Gramian and zeroes Gramians whose trace is below ``norm_eps = 1e-4`` (an absolute
threshold on ``sum_i ||g_i||^2``); here ``reg_eps`` defaults to 0 (exact projection) and there is no absolute
threshold. With ``reg_eps=1e-4`` the two agree on inputs whose trace is above 1e-4.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import as_np, combine_rows, gramian, normalise_trace, project_dual_cone
from mtfuse.weighting.base import GradientMethod, register


def regularised(gram: torch.Tensor, reg_eps: float) -> np.ndarray | None:
    """The trace-normalised Gramian plus ``reg_eps I`` (``None`` when every gradient is zero)."""
    Q = normalise_trace(as_np(gram))
    return None if Q is None else Q + reg_eps * np.eye(Q.shape[0])


def upgrad_weights(gram: torch.Tensor, reg_eps: float = 0.0) -> torch.Tensor:
    """Effective weights ``w`` (float64, CPU) with ``upgrad(G) == w @ G``."""
    K = gram.shape[0]
    U = np.eye(K) / K
    Q = regularised(gram, reg_eps)
    W = U if Q is None else project_dual_cone(Q, U)
    return torch.from_numpy(W.sum(axis=0))


def upgrad(G: torch.Tensor, reg_eps: float = 0.0) -> torch.Tensor:
    """UPGrad update for the ``[K, P]`` task gradients ``G``."""
    return combine_rows(upgrad_weights(gramian(G), reg_eps), G)


class UPGradParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reg_eps: float = Field(0.0, ge=0.0)  # TorchJD's default is 1e-4


@register("upgrad")
class UPGrad(GradientMethod):
    Params = UPGradParams
    params: UPGradParams

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        w = upgrad_weights(gramian(G), self.params.reg_eps)
        self._record(w)
        return combine_rows(w, G)
