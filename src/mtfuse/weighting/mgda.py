"""MGDA: multiple-gradient descent, the min-norm point of the convex hull of the task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018
(https://arxiv.org/abs/1810.04650); Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective
optimization", C. R. Math. 2012.

The update is ``d = w @ G`` with ``w = argmin_{w in simplex} ||w @ G||^2``. Two solvers:

* ``exact`` (default): the min-norm point solved exactly as a non-negative least-squares problem on the
  Gramian (see ``_linalg.min_norm_simplex``);
* ``frank_wolfe``: the paper's Algorithm 2 (Frank-Wolfe from uniform weights, stop when the step size is below
  ``epsilon`` or after ``max_iters``), step for step as TorchJD's ``MGDA``; it only approximates the min-norm
  point.

``normalization`` is the paper's gradient normalisation (their code's ``l2``, ``loss``, ``loss+``): each
``g_i`` is divided by ``||g_i||``, ``L_i`` or ``L_i ||g_i||`` before solving, and the update combines the
normalised gradients (so the effective weights are ``w_i / n_i``).

MGDA-UB (the paper's "upper bound", Section 3.3) is this same function applied to the gradients of the losses
with respect to the shared representation ``Z`` instead of the shared parameters: the loop would then
back-propagate ``sum_i w_i L_i`` with the weights from ``mgda_weights``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import as_np, combine_rows, gramian, min_norm_simplex
from mtfuse.weighting.base import GradientMethod, register

Normalization = Literal["none", "l2", "loss", "loss+"]


def frank_wolfe_min_norm(Q: torch.Tensor, epsilon: float = 1e-3, max_iters: int = 100) -> torch.Tensor:
    """Sener & Koltun's Algorithm 2 on the Gramian ``Q`` (float64): approximate min-norm weights."""
    K = Q.shape[0]
    alpha = torch.full((K,), 1.0 / K, dtype=Q.dtype)
    for _ in range(max_iters):
        t = int(torch.argmin(Q @ alpha))
        e_t = torch.zeros(K, dtype=Q.dtype)
        e_t[t] = 1.0
        a, b, c = alpha @ Q[:, t], alpha @ Q @ alpha, Q[t, t]
        gamma = 1.0 if c <= a else 0.0 if b <= a else float((b - a) / (b + c - 2 * a))
        alpha = (1 - gamma) * alpha + gamma * e_t
        if gamma < epsilon:
            break
    return alpha


def normalizers(
    gram: torch.Tensor, losses: torch.Tensor | None, normalization: Normalization
) -> torch.Tensor:
    """The per-task divisors ``n_i`` of the paper's gradient normalisation (float64, CPU)."""
    norms = gram.detach().to("cpu", torch.float64).diagonal().clamp(min=0.0).sqrt()
    if normalization == "none":
        return torch.ones_like(norms)
    if normalization == "l2":
        n = norms
    else:
        if losses is None:
            raise ValueError(f"MGDA normalization '{normalization}' needs the task losses")
        n = losses.detach().to("cpu", torch.float64)
        n = n * norms if normalization == "loss+" else n
    return torch.where(n > 0, n, torch.ones_like(n))


def mgda_weights(
    gram: torch.Tensor,
    losses: torch.Tensor | None = None,
    normalization: Normalization = "none",
    solver: Literal["exact", "frank_wolfe"] = "exact",
    epsilon: float = 1e-3,
    max_iters: int = 100,
) -> torch.Tensor:
    """Effective weights ``w`` (float64, CPU) with ``mgda(G) == w @ G``."""
    n = normalizers(gram, losses, normalization)
    Q = gram.detach().to("cpu", torch.float64) / (n[:, None] * n[None, :])
    if solver == "exact":
        simplex_w = torch.from_numpy(min_norm_simplex(as_np(Q)))
    else:
        simplex_w = frank_wolfe_min_norm(Q, epsilon, max_iters)
    return simplex_w / n


def mgda(
    G: torch.Tensor,
    losses: torch.Tensor | None = None,
    normalization: Normalization = "none",
    solver: Literal["exact", "frank_wolfe"] = "exact",
    epsilon: float = 1e-3,
    max_iters: int = 100,
) -> torch.Tensor:
    """MGDA update (min-norm element of the convex hull of the, optionally normalised, rows of ``G``)."""
    return combine_rows(mgda_weights(gramian(G), losses, normalization, solver, epsilon, max_iters), G)


class MGDAParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    normalization: Normalization = "none"
    solver: Literal["exact", "frank_wolfe"] = "exact"
    epsilon: float = Field(1e-3, gt=0.0)  # frank_wolfe only
    max_iters: int = Field(100, ge=1)  # frank_wolfe only


@register("mgda")
class MGDA(GradientMethod):
    Params = MGDAParams
    params: MGDAParams

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G, losses)
        p = self.params
        w = mgda_weights(gramian(G), losses, p.normalization, p.solver, p.epsilon, p.max_iters)
        self._record(w)
        return combine_rows(w, G)
