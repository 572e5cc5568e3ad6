"""Aligned-MTL: independent component alignment.

Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for Multi-Task Learning",
CVPR 2023, Algorithm 1:
https://openaccess.thecvf.com/content/CVPR2023/html/Senushkin_Independent_Component_Alignment_for_Multi-Task_Learning_CVPR_2023_paper.html

The gradient matrix ``G`` is replaced by the closest matrix with orthogonal rows of equal norm (its singular
values all set to the smallest one, ``sigma_min``), removing both conflicts and dominance; the update is
``w @ G_hat`` for the task weights ``w``. On the Gramian ``Q = V diag(lambda) V^T`` (rank r, eigenvalues below
``lambda_max K eps`` dropped): ``G_hat = B G`` with ``B = sqrt(lambda_r) V diag(lambda^-1/2) V^T``, so the
effective weights are ``B w``. ``scale_mode`` picks the common singular value: ``min`` (the paper),
``median`` or ``rmse`` (mean eigenvalue, as in the official code's variant).

Orthogonal gradients of equal norm are left unchanged: the update is then ``sum_i g_i`` (``reduction="sum"``,
``w = 1``: the official code, LibMTL) or their mean (``reduction="mean"``, ``w = 1/K``: TorchJD's
``AlignedMTL``, whose results are ours divided by K).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from mtfuse.weighting._linalg import combine_rows, gramian
from mtfuse.weighting.base import GradientMethod, register

ScaleMode = Literal["min", "median", "rmse"]


def aligned_mtl_weights(
    gram: torch.Tensor,
    scale_mode: ScaleMode = "min",
    reduction: Literal["sum", "mean"] = "sum",
    eps: float | None = None,
) -> torch.Tensor:
    """Effective weights ``B w`` (float64, CPU) with ``aligned_mtl(G) == (B w) @ G``.

    ``eps``: the rank tolerance, the machine epsilon of the precision of the gradients (default: of the
    Gramian's dtype). The Gramian is formed in float64 whatever G's dtype, so callers pass G's.
    """
    eps = torch.finfo(gram.dtype).eps if eps is None else eps
    Q = gram.detach().to("cpu", torch.float64)
    K = Q.shape[0]
    w = torch.full((K,), 1.0 if reduction == "sum" else 1.0 / K, dtype=torch.float64)
    lam, V = torch.linalg.eigh(Q)
    rank = int((lam > lam.max() * K * eps).sum())
    if rank == 0:
        return w
    order = torch.argsort(lam, descending=True)[:rank]
    lam, V = lam[order], V[:, order]
    scale = {"min": lam[-1], "median": torch.median(lam), "rmse": lam.mean()}[scale_mode]
    B = scale.sqrt() * (V / lam.sqrt()) @ V.T
    return B @ w


def aligned_mtl(
    G: torch.Tensor, scale_mode: ScaleMode = "min", reduction: Literal["sum", "mean"] = "sum"
) -> torch.Tensor:
    """Aligned-MTL update for the ``[K, P]`` task gradients ``G``."""
    eps = torch.finfo(G.dtype).eps
    return combine_rows(aligned_mtl_weights(gramian(G), scale_mode, reduction, eps), G)


class AlignedMTLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale_mode: ScaleMode = "min"
    reduction: Literal["sum", "mean"] = "sum"


@register("aligned_mtl")
class AlignedMTL(GradientMethod):
    Params = AlignedMTLParams
    params: AlignedMTLParams

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        eps = torch.finfo(G.dtype).eps
        w = aligned_mtl_weights(gramian(G), self.params.scale_mode, self.params.reduction, eps)
        self._record(w)
        return combine_rows(w, G)
