"""DELLA-Merging: MAGPRUNE (magnitude-ranked random drop and rescale), then TIES' elect + disjoint merge.

Deep et al. 2024, "DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based Sampling",
https://arxiv.org/abs/2406.11617. Within each row of each task vector, entries ranked by magnitude get keep
probabilities from ``density - epsilon`` (smallest) to ``density + epsilon`` (largest); kept entries are
rescaled by 1/(keep probability) (the paper's 1/(1-p)); signs are elected and the agreeing entries averaged
as in TIES; theta = theta_base + scale * merged. ``epsilon = 0`` is DARE-TIES. The masks are drawn from
``generator``: seed it per tensor for a reproducible merge.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.methods.task_arithmetic import TaskArithmeticParams, apply_task_vectors
from mtfuse.fusion.merge.primitives import della_drop, task_vectors


class MagPruneParams(TaskArithmeticParams):
    """MAGPRUNE's settings, shared by ``della`` and ``della_linear``."""

    density: float = Field(0.5, gt=0, le=1)  # mean keep probability
    epsilon: float = Field(0.1, ge=0, lt=1)  # keep probabilities span density +/- epsilon by magnitude rank
    rescale: bool = True  # divide each kept entry by its keep probability

    @model_validator(mode="after")
    def _probabilities(self) -> MagPruneParams:
        if not (self.density - self.epsilon > 0 and self.density + self.epsilon <= 1 + 1e-9):
            raise ValueError(
                f"density +/- epsilon must lie in (0, 1], got density {self.density}, epsilon {self.epsilon}"
            )
        return self


def magprune(
    tensors: list[Tensor], base: Tensor, params: MagPruneParams, generator: torch.Generator | None
) -> list[Tensor]:
    """Each model's task vector after MAGPRUNE (magnitude-ranked random drop, kept entries rescaled)."""
    return [
        della_drop(tv, params.density, params.epsilon, params.rescale, generator)
        for tv in task_vectors(tensors, base)
    ]


class DellaParams(MagPruneParams):
    sign_method: Literal["sum", "count"] = "sum"
    normalize: bool = True  # mean (True) or sum (False) over the models agreeing with the elected sign


@merge_method("della", Params=DellaParams, needs_base=True, stochastic=True)
def della(
    tensors: list[Tensor],
    base: Tensor | None,
    params: DellaParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DELLA: magnitude-ranked random drop + rescale, elect signs, average the agreeing entries."""
    assert base is not None
    tvs = magprune(tensors, base, params, generator)
    return apply_task_vectors(tvs, base, weights, params, consensus=params.sign_method)
