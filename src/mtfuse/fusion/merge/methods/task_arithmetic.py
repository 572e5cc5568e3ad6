"""Task arithmetic: add a scaled sum of task vectors to the base model.

Ilharco et al. 2023, "Editing Models with Task Arithmetic" (ICLR), https://arxiv.org/abs/2212.04089.
theta = theta_base + scale * sum_i w_i tau_i with tau_i = theta_i - theta_base (``scale`` is the paper's
lambda; with ``normalize: true`` the sum is divided by sum_i w_i). Negative weights are allowed: a negative
task vector is the paper's task negation ("forgetting").

``TaskArithmeticParams`` is also the base of the TIES / DARE / Breadcrumbs / DELLA parameters: those methods
are this one with each task vector sparsified first and, for the TIES family, a sign election.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.errors import ConfigError
from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.primitives import SignMethod, combine, task_vectors


class TaskArithmeticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)  # lambda, the scaling coefficient
    normalize: bool = False  # divide the weighted sum of task vectors by the sum of the weights


def apply_task_vectors(
    tvs: list[Tensor],
    base: Tensor,
    weights: list[float],
    params: TaskArithmeticParams,
    consensus: SignMethod | None = None,
) -> Tensor:
    """theta_base + scale * combine(tvs): the core every task-vector method ends with."""
    if params.normalize and consensus is None and abs(sum(weights)) < 1e-12:
        raise ConfigError(f"the weights {weights} sum to 0; cannot normalise")
    delta = combine(tvs, weights, consensus=consensus, normalize=params.normalize)
    return base + params.scale * delta


@merge_method(
    "task_arithmetic", Params=TaskArithmeticParams, needs_base=True, negative_weights=True, elementwise=True
)
def task_arithmetic(
    tensors: list[Tensor],
    base: Tensor | None,
    params: TaskArithmeticParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Base plus the scaled weighted sum of task vectors (Ilharco et al. 2023)."""
    assert base is not None
    return apply_task_vectors(task_vectors(tensors, base), base, weights, params)
