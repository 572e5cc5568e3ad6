"""TIES-Merging: trim, elect sign, disjoint merge.

Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models" (NeurIPS),
https://arxiv.org/abs/2306.01708. Each task vector keeps its top-``density`` fraction of entries by magnitude
(the paper's k = 20% is the default); each entry's sign is elected from the weighted sum of the trimmed
vectors ("sum", the paper) or by majority ("count"); each entry is then the weighted mean over the models
that agree with that sign; theta = theta_base + scale * merged (the paper's lambda, 1 by default).
With ``normalize: false`` the agreeing entries are summed instead of averaged (mergekit's option).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.methods.task_arithmetic import TaskArithmeticParams, apply_task_vectors
from mtfuse.fusion.merge.primitives import magnitude_threshold, task_vectors, trim


class TiesParams(TaskArithmeticParams):
    density: float = Field(0.2, gt=0, le=1)  # fraction of each task vector kept (the paper's k)
    sign_method: Literal["sum", "count"] = "sum"
    normalize: bool = True  # mean (True) or sum (False) over the models agreeing with the elected sign


def trim_threshold(chunks: Callable[[], Iterable[Tensor]], numel: int, params: TiesParams) -> float | None:
    """One task vector's trim cut: its ``density``-quantile of |tau| from the top (None: keep all)."""
    return magnitude_threshold(lambda: (c.abs() for c in chunks()), numel, params.density)


@merge_method("ties", Params=TiesParams, needs_base=True, elementwise=True, prepare=trim_threshold)
def ties(
    tensors: list[Tensor],
    base: Tensor | None,
    params: TiesParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
    prepared: list[float | None] | None = None,
) -> Tensor:
    """TIES: trim each task vector to its top-k magnitudes, elect signs, average the agreeing entries."""
    assert base is not None
    tvs = task_vectors(tensors, base)
    if prepared is None:  # the whole tensor is here; the driver passes thresholds when it streams row blocks
        prepared = [trim_threshold(lambda tv=tv: [tv], tv.numel(), params) for tv in tvs]
    tvs = [trim(tv, cut) for tv, cut in zip(tvs, prepared, strict=True)]
    return apply_task_vectors(tvs, base, weights, params, consensus=params.sign_method)
