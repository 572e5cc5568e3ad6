"""Breadcrumbs-TIES: Model Breadcrumbs' masks (outliers and tiny entries dropped), then TIES' sign election
and disjoint merge.

Davari & Belilovsky 2024, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks" (ECCV),
https://arxiv.org/abs/2312.06795, combined with TIES' elect + disjoint merge (Yadav et al. 2023, NeurIPS,
https://arxiv.org/abs/2306.01708); this is mergekit's ``breadcrumbs_ties`` (``breadcrumbs`` is the one
without sign election). Each task vector keeps a ``density`` fraction of its entries after its ``gamma``
fraction of largest |values| is dropped; each entry's sign is elected from the weighted sum of the masked
task vectors ("sum") or by majority ("count"); the agreeing entries are summed (``normalize: false``,
mergekit's default for this method) or averaged with the weights (``normalize: true``, as ``ties``);
theta = theta_base + scale * merged.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.methods.breadcrumbs import BreadcrumbsParams, band
from mtfuse.fusion.merge.methods.task_arithmetic import apply_task_vectors
from mtfuse.fusion.merge.primitives import band_mask, task_vectors


class BreadcrumbsTiesParams(BreadcrumbsParams):
    sign_method: Literal["sum", "count"] = "sum"
    normalize: bool = False  # sum (False, mergekit's default) or mean over the models agreeing with the sign


@merge_method(
    "breadcrumbs_ties", Params=BreadcrumbsTiesParams, needs_base=True, elementwise=True, prepare=band
)
def breadcrumbs_ties(
    tensors: list[Tensor],
    base: Tensor | None,
    params: BreadcrumbsTiesParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
    prepared: list[tuple[float | None, float | None]] | None = None,
) -> Tensor:
    """Breadcrumbs-TIES: drop outliers and tiny entries, elect signs, combine the agreeing entries."""
    assert base is not None
    tvs = task_vectors(tensors, base)
    if prepared is None:  # the whole tensor is here; the driver passes the cuts when it streams row blocks
        prepared = [band(lambda tv=tv: [tv], tv.numel(), params) for tv in tvs]
    tvs = [tv * band_mask(tv, *cuts) for tv, cuts in zip(tvs, prepared, strict=True)]
    return apply_task_vectors(tvs, base, weights, params, consensus=params.sign_method)
