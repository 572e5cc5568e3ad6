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
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.methods.della import MagPruneParams, magprune
from mtfuse.fusion.merge.methods.task_arithmetic import apply_task_vectors


class DellaLinearParams(MagPruneParams):
    """MAGPRUNE's settings plus task arithmetic's (``scale``, ``normalize``: false by default)."""


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
    return apply_task_vectors(magprune(tensors, base, params, generator), base, weights, params)
