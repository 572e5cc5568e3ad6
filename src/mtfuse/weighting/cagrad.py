"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021
(https://arxiv.org/abs/2110.14048), Algorithm 1.

With ``g_0`` the mean gradient and ``sqrt(phi) = c ||g_0||``, solve the dual
``w* = argmin_{w in simplex} g_w . g_0 + sqrt(phi) ||g_w||`` (``g_w = w @ G``) and update along
``d = g_0 + sqrt(phi) / ||g_w*|| g_w*``, divided by ``1 + c^2`` (``rescale=1``, the official code's default),
``1 + c`` (``rescale=2``) or not at all (``rescale=0``, TorchJD's ``CAGrad``). ``c = 0`` gives the mean
gradient.

The dual is a small convex problem over the simplex, solved with ``scipy.optimize.minimize`` (SLSQP, as the
official code and LibMTL do, here with an analytic gradient and a tight tolerance) on the trace-normalised
Gramian (the weights do not depend on the gradients' scale); TorchJD solves it with cvxpy. If ``g_w*``
vanishes (the mean can be improved by no direction: Pareto-stationary) the update is the mean gradient.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import minimize

from mtfuse.weighting._linalg import as_np, combine_rows, gramian, normalise_trace
from mtfuse.weighting.base import GradientMethod, register


def cagrad_weights(gram: torch.Tensor, c: float = 0.4, rescale: Literal[0, 1, 2] = 1) -> torch.Tensor:
    """Effective weights ``w`` (float64, CPU) with ``cagrad(G) == w @ G``."""
    Q_raw = as_np(gram)
    K = Q_raw.shape[0]
    b = np.full(K, 1.0 / K)
    Q = normalise_trace(Q_raw)
    if c == 0 or Q is None:
        return torch.from_numpy(b)
    sqrt_phi = c * float(np.sqrt(max(b @ Q @ b, 0.0)))
    Qb = Q @ b

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        Qw = Q @ w
        norm = float(np.sqrt(max(w @ Qw, 1e-30)))
        return float(w @ Qb + sqrt_phi * norm), Qb + sqrt_phi * Qw / norm

    res = minimize(
        objective,
        b,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * K,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(K)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    w = np.clip(res.x, 0.0, None)
    w /= w.sum()
    gw_norm = float(np.sqrt(max(w @ Q @ w, 0.0)))
    out = b + (sqrt_phi / gw_norm) * w if gw_norm > 1e-12 else b
    scale = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
    return torch.from_numpy(out / scale)


def cagrad(G: torch.Tensor, c: float = 0.4, rescale: Literal[0, 1, 2] = 1) -> torch.Tensor:
    """CAGrad update for the ``[K, P]`` task gradients ``G``."""
    return combine_rows(cagrad_weights(gramian(G), c, rescale), G)


class CAGradParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    c: float = Field(0.4, ge=0.0)  # radius of the ball around g_0 (paper: 0.4 on NYUv2, 0.5 on CityScapes)
    rescale: Literal[0, 1, 2] = 1


@register("cagrad")
class CAGrad(GradientMethod):
    Params = CAGradParams
    params: CAGradParams

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        w = cagrad_weights(gramian(G), self.params.c, self.params.rescale)
        self._record(w)
        return combine_rows(w, G)
