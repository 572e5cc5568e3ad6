"""TIES-Merging: trim, elect sign, disjoint merge.

Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models" (NeurIPS),
https://arxiv.org/abs/2306.01708. Each task vector keeps its top-``density`` fraction of entries by magnitude
(the paper's k = 20% is the default); each entry's sign is elected from the weighted sum of the trimmed
vectors ("sum", the paper) or by majority ("count"); each entry is then the weighted mean over the models
that agree with that sign; theta = theta_base + scale * merged (the paper's lambda, 1 by default).
With ``normalize: false`` the agreeing entries are summed instead of averaged (mergekit's option).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.methods.task_arithmetic import TaskArithmeticParams, apply_task_vectors
from mtfuse.fusion.merge.primitives import magnitude_prune, task_vectors


class TiesParams(TaskArithmeticParams):
    density: float = Field(0.2, gt=0, le=1)  # fraction of each task vector kept (the paper's k)
    sign_method: Literal["sum", "count"] = "sum"
    normalize: bool = True  # mean (True) or sum (False) over the models agreeing with the elected sign


@merge_method("ties", Params=TiesParams, needs_base=True)
def ties(
    tensors: list[Tensor],
    base: Tensor | None,
    params: TiesParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TIES: trim each task vector to its top-k magnitudes, elect signs, average the agreeing entries."""
    assert base is not None
    tvs = [magnitude_prune(tv, params.density) for tv in task_vectors(tensors, base)]
    return apply_task_vectors(tvs, base, weights, params, consensus=params.sign_method)
