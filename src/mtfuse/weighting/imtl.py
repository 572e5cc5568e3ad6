"""IMTL-G: impartial multi-task learning, gradient balance.

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021
(https://openreview.net/forum?id=IMPnRXEWpvr) (IMTL-G only; the loss-scale part IMTL-L is not
included).

Finds the combination ``d = sum_i w_i g_i`` with ``sum_i w_i = 1`` whose projections onto every unit task
gradient are equal: ``d . g_i / ||g_i||`` is the same for all i. The paper's closed form
``w_{2..K} = g_1 U^T (D U^T)^-1`` (rows ``D_i = g_1 - g_i``, ``U_i = u_1 - u_i``) is, on the Gramian ``Q``,
``v = Q^+ diag(Q)^(1/2)``, ``w = v / sum(v)`` -- the form TorchJD's ``IMTLG`` uses, which also covers linearly
dependent gradients (pseudo-inverse). When ``sum(v)`` vanishes the weights are zero (TorchJD's convention).
"""

from __future__ import annotations

import torch

from mtfuse.weighting._linalg import combine_rows, gramian
from mtfuse.weighting.base import GradientMethod, register


def imtl_weights(gram: torch.Tensor) -> torch.Tensor:
    """IMTL-G weights (float64, CPU, summing to 1) from the Gramian ``G G^T``."""
    Q = gram.detach().to("cpu", torch.float64)
    v = torch.linalg.pinv(Q) @ Q.diagonal().clamp(min=0.0).sqrt()
    s = v.sum()
    return torch.zeros_like(v) if s.abs() < 1e-12 else v / s


def imtl(G: torch.Tensor) -> torch.Tensor:
    """IMTL-G update for the ``[K, P]`` task gradients ``G``."""
    return combine_rows(imtl_weights(gramian(G)), G)


@register("imtl")
class IMTL(GradientMethod):
    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        w = imtl_weights(gramian(G))
        self._record(w)
        return combine_rows(w, G)
