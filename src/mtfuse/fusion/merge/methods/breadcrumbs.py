"""Model Breadcrumbs: task arithmetic over task vectors with both outliers and tiny entries masked out.

Davari & Belilovsky 2024, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks" (ECCV),
https://arxiv.org/abs/2312.06795. In each task vector the ``gamma`` fraction of entries with the largest
|value| (outliers) and then the smallest entries are dropped so that a ``density`` fraction stays
(``density + gamma <= 1``); theta = theta_base + scale * sum_i w_i masked(tau_i). Defaults density 0.9,
gamma 0.01 (mergekit's example values; tune them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from pydantic import Field, model_validator
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.methods.task_arithmetic import TaskArithmeticParams, apply_task_vectors
from mtfuse.fusion.merge.primitives import band_mask, breadcrumbs_cuts, task_vectors


class BreadcrumbsParams(TaskArithmeticParams):
    density: float = Field(0.9, gt=0, le=1)  # fraction of each task vector kept
    gamma: float = Field(0.01, ge=0, lt=1)  # fraction of largest-magnitude entries dropped

    @model_validator(mode="after")
    def _fits(self) -> BreadcrumbsParams:
        if self.density + self.gamma > 1 + 1e-9:
            raise ValueError(f"density + gamma must be <= 1, got {self.density} + {self.gamma}")
        return self


def band(
    chunks: Callable[[], Iterable[Tensor]], numel: int, params: BreadcrumbsParams
) -> tuple[float | None, float | None]:
    """One task vector's kept band of |tau| (``primitives.breadcrumbs_cuts``) from its chunks."""
    return breadcrumbs_cuts(lambda: (c.abs() for c in chunks()), numel, params.density, params.gamma)


@merge_method("breadcrumbs", Params=BreadcrumbsParams, needs_base=True, elementwise=True, prepare=band)
def breadcrumbs(
    tensors: list[Tensor],
    base: Tensor | None,
    params: BreadcrumbsParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
    prepared: list[tuple[float | None, float | None]] | None = None,
) -> Tensor:
    """Model Breadcrumbs: drop outliers and tiny entries of each task vector, then task arithmetic."""
    assert base is not None
    tvs = task_vectors(tensors, base)
    if prepared is None:  # the whole tensor is here; the driver passes the cuts when it streams row blocks
        prepared = [band(lambda tv=tv: [tv], tv.numel(), params) for tv in tvs]
    tvs = [tv * band_mask(tv, *cuts) for tv, cuts in zip(tvs, prepared, strict=True)]
    return apply_task_vectors(tvs, base, weights, params)
