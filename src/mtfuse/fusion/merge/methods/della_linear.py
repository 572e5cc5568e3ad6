"""DELLA-linear: DELLA's MAGPRUNE (magnitude-ranked random drop and rescale), then task arithmetic.

Deep et al. 2024, "DELLA-Merging: Reducing Interference in Model Merging through
Magnitude-Based Sampling", https://arxiv.org/abs/2406.11617; this variant without sign election is mergekit's
``della_linear`` (``della`` is the one with TIES' elect + disjoint merge). Each task vector is sparsified by
MAGPRUNE as in ``della`` (keep probabilities from ``density - epsilon`` to ``density + epsilon`` by magnitude
rank within each row, kept entries divided by their keep probability when ``rescale``), then
theta = theta_base + scale * sum_i w_i tau_i (divided by sum_i w_i with ``normalize: true``; mergekit's default
is false, as here). ``epsilon = 0`` is ``dare_linear``. As for ``della``, mergekit's ``rescale`` instead
restores each task vector's L1 norm. The masks are drawn from ``generator``: seed it per tensor for a
reproducible merge.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.methods.task_arithmetic import TaskArithmeticParams, apply_task_vectors
from mtfuse.fusion.merge.primitives import della_drop, task_vectors


class DellaLinearParams(TaskArithmeticParams):
    density: float = Field(0.5, gt=0, le=1)  # mean keep probability
    epsilon: float = Field(0.1, ge=0, lt=1)  # keep probabilities span density +/- epsilon by magnitude rank
    rescale: bool = True  # divide each kept entry by its keep probability

    @model_validator(mode="after")
    def _probabilities(self) -> DellaLinearParams:
        if not (self.density - self.epsilon > 0 and self.density + self.epsilon <= 1 + 1e-9):
            raise ValueError(
                f"density +/- epsilon must lie in (0, 1], got density {self.density}, epsilon {self.epsilon}"
            )
        return self


@merge_method("della_linear", Params=DellaLinearParams, needs_base=True, stochastic=True)
def della_linear(
    tensors: list[Tensor],
    base: Tensor | None,
    params: DellaLinearParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DELLA-linear: magnitude-ranked random drop + rescale of each task vector, then task arithmetic."""
    assert base is not None
    tvs = [
        della_drop(tv, params.density, params.epsilon, params.rescale, generator)
        for tv in task_vectors(tensors, base)
    ]
    return apply_task_vectors(tvs, base, weights, params)
