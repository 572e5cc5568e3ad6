"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021
(https://arxiv.org/abs/2110.14048), Equation 2 and Algorithm 1.

With ``g_0`` the mean gradient and ``sqrt(phi) = c ||g_0||``, the update solves the paper's objective
``max_{||d - g_0|| <= sqrt(phi)} min_i g_i . d``, divided by ``1 + c^2`` (``rescale=1``, the official code's
default), ``1 + c`` (``rescale=2``) or not at all (``rescale=0``, TorchJD's ``CAGrad``). ``c = 0`` gives the
mean gradient.

Solver. The paper (and the official code, LibMTL and TorchJD) solve the dual ``w* = argmin_{w in simplex}
g_w . g_0 + sqrt(phi) ||g_w||`` and take ``d = g_0 + sqrt(phi) g_w* / ||g_w*||``. That formula is undefined
when ``g_w*`` vanishes (0 in the convex hull of the gradients, a Pareto-stationary point: the references then
divide by a tiny norm, or fall back to ``g_0``) and ill-conditioned near it, although the objective still has
a solution better than ``g_0``. Here the primal is solved exactly instead, in the K-dimensional span of the
gradients (the optimum lies in ``g_0`` + that span): for a target worst-task value ``t``, the closest ``d`` to
``g_0`` with ``g_i . d >= t`` for every task is a least-distance program, solved exactly by non-negative least
squares (``_linalg.least_distance``); bisection on ``t`` finds the largest ``t`` whose closest ``d`` is in the
ball. Whenever ``g_w* != 0`` the maximiser is unique and is the paper's ``g_0 + sqrt(phi) g_w*/||g_w*||``
(the KKT conditions of the two problems coincide); when ``g_w* = 0`` every point of the ball in the dual cone
of the gradients attains the optimum (0) and this picks the closest one to ``g_0`` (its projection on that
cone: the least change to the mean gradient). All on the trace-normalised Gramian (the weights do not depend
on the gradients' scale).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import minimize

from mtfuse.weighting._linalg import as_np, combine_rows, gramian, least_distance, normalise_trace
from mtfuse.weighting.base import GradientMethod, register


def _dual_weights(Q: np.ndarray, b: np.ndarray, sqrt_phi: float) -> np.ndarray:
    """``w* = argmin_{w in simplex} w . Qb + sqrt(phi) ||g_w||`` (SLSQP from ``b``, analytic gradient)."""
    K = len(b)
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
    return w / w.sum()


def _primal_weights(Q: np.ndarray, b: np.ndarray, sqrt_phi: float) -> np.ndarray:
    """The primal's solution closest to ``g_0``, as weights ``v`` with ``d = v @ G``.

    In orthonormal coordinates of the span of the gradients (``Q = R^T R``, ``R = sqrt(Lambda) V^T``):
    ``d = g_0 + sqrt(phi) u`` with ``u = sum_j y_j G^T v_j / sqrt(lambda_j)`` gives ``g_i . d / sqrt(phi) =
    a_i + (R^T y)_i`` (``a = Q b / sqrt(phi)``) and ``||d - g_0|| / sqrt(phi) = ||y||``.
    """
    K = len(b)
    lam, V = np.linalg.eigh((Q + Q.T) / 2)
    lam = np.clip(lam, 0.0, None)
    R = np.sqrt(lam)[:, None] * V.T
    a = Q @ b / sqrt_phi

    def closest(t: float) -> np.ndarray | None:  # min ||y|| s.t. a + R^T y >= t; None if infeasible
        y = least_distance(R.T, t - a)
        return y if y is not None and float(y @ y) <= 1.0 else None

    lo, y = float(a.min()), np.zeros(K)  # y = 0 (d = g_0) attains min_i a_i
    hi = float(np.min(a + np.linalg.norm(R, axis=0)))  # no y in the ball does better
    top = closest(hi)
    if top is not None:
        y = top
    else:  # bisection: the t whose closest y is in the ball form an interval ending at the optimum
        while hi - lo > 1e-13 * (1.0 + abs(lo)):
            mid = 0.5 * (lo + hi)
            cand = closest(mid)
            if cand is None:
                hi = mid
            else:
                lo, y = mid, cand
    keep = lam > 1e-14 * lam.max()  # directions with no extent in the span carry nothing
    return b + sqrt_phi * (V[:, keep] @ (y[keep] / np.sqrt(lam[keep])))


def cagrad_weights(gram: torch.Tensor, c: float = 0.4, rescale: Literal[0, 1, 2] = 1) -> torch.Tensor:
    """Effective weights ``w`` (float64, CPU) with ``cagrad(G) == w @ G``."""
    Q_raw = as_np(gram)
    K = Q_raw.shape[0]
    b = np.full(K, 1.0 / K)
    Q = normalise_trace(Q_raw)
    if c == 0 or Q is None:
        return torch.from_numpy(b)
    sqrt_phi = c * float(np.sqrt(max(b @ Q @ b, 0.0)))
    if sqrt_phi == 0.0:  # g_0 = 0: the ball is the single point d = g_0
        return torch.from_numpy(b)
    out = _primal_weights(Q, b, sqrt_phi)
    w = _dual_weights(Q, b, sqrt_phi)
    gw_norm = float(np.sqrt(max(w @ Q @ w, 0.0)))
    if gw_norm > 1e-3 * sqrt_phi:  # else the formula's weights pass ~1e3 / K: ill-conditioned
        formula = b + (sqrt_phi / gw_norm) * w  # the paper's g_0 + sqrt(phi) g_w* / ||g_w*||
        if float(np.min(Q @ formula)) >= float(np.min(Q @ out)) - 1e-12 * sqrt_phi:
            out = formula  # the two agree up to the solvers' tolerances: keep the paper's form
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
