"""DARE (Drop And REscale), alone (``dare_linear``) or followed by TIES' sign election (``dare_ties``).

Yu et al. 2024, "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free
Lunch" (ICML), https://arxiv.org/abs/2311.03099. Each entry of each task vector is kept with probability
``density`` (= 1 - the paper's drop rate p) and the kept entries are rescaled by 1/density, so the task vector
is unchanged in expectation; the sparse task vectors are then merged by task arithmetic (``dare_linear``:
theta_base + scale * sum_i w_i tau_i) or by TIES' elect + disjoint mean (``dare_ties``). The masks are drawn
from ``generator``: seed it per tensor for a reproducible merge.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.methods.task_arithmetic import TaskArithmeticParams, apply_task_vectors
from mtfuse.fusion.merge.primitives import random_drop, task_vectors


class DareLinearParams(TaskArithmeticParams):
    density: float = Field(0.5, gt=0, le=1)  # keep probability, 1 - drop rate
    rescale: bool = True  # divide the kept entries by density


class DareTiesParams(DareLinearParams):
    sign_method: Literal["sum", "count"] = "sum"
    normalize: bool = True  # mean (True) or sum (False) over the models agreeing with the elected sign


def _dropped(tensors: list[Tensor], base: Tensor, params: DareLinearParams, generator) -> list[Tensor]:
    return [random_drop(tv, params.density, params.rescale, generator) for tv in task_vectors(tensors, base)]


@merge_method("dare_linear", Params=DareLinearParams, needs_base=True, stochastic=True)
def dare_linear(
    tensors: list[Tensor],
    base: Tensor | None,
    params: DareLinearParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DARE then task arithmetic: randomly drop task-vector entries, rescale, add to the base."""
    assert base is not None
    return apply_task_vectors(_dropped(tensors, base, params, generator), base, weights, params)


@merge_method("dare_ties", Params=DareTiesParams, needs_base=True, stochastic=True)
def dare_ties(
    tensors: list[Tensor],
    base: Tensor | None,
    params: DareTiesParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DARE then TIES: randomly drop and rescale, elect signs, average the agreeing entries."""
    assert base is not None
    tvs = _dropped(tensors, base, params, generator)
    return apply_task_vectors(tvs, base, weights, params, consensus=params.sign_method)
