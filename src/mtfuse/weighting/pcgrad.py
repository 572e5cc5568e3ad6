"""PCGrad: projecting conflicting gradients.

Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020
(https://arxiv.org/abs/2001.06782), Algorithm 1.

For each task i, ``g_i^PC`` starts at ``g_i``; for every other task j, in a random order, if
``g_i^PC . g_j < 0`` then ``g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 * g_j``. The update is ``sum_i g_i^PC``.
Non-conflicting gradients (all pairwise inner products >= 0) are left unchanged, so the update is their sum.

Computed on the Gramian: ``g_i^PC = sum_k C[i, k] g_k``, so only K x K numbers are updated and the result is
``w @ G`` with ``w = C.sum(0)`` (the effective task weights, logged). Random order: for i = 0..K-1,
``torch.randperm(K, generator=...)`` with i skipped -- the same draws TorchJD's ``PCGrad`` makes from the
global generator, so both agree exactly under the same seed.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from mtfuse.weighting._linalg import combine_rows, gramian
from mtfuse.weighting._state import generator_state, seeded_generator, set_generator_state
from mtfuse.weighting.base import GradientMethod, register


def pcgrad_weights(gram: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Effective weights ``w`` (float64, CPU) with ``pcgrad(G) == w @ G``, from the Gramian ``G G^T``."""
    Q = gram.detach().to("cpu", torch.float64)
    K = Q.shape[0]
    w = torch.zeros(K, dtype=torch.float64)
    for i in range(K):
        c = torch.zeros(K, dtype=torch.float64)
        c[i] = 1.0
        for j in torch.randperm(K, generator=generator).tolist():
            if j == i:
                continue
            inner = Q[j] @ c  # g_i^PC . g_j
            if inner < 0.0:
                c[j] -= inner / Q[j, j]
        w += c
    return w


def pcgrad(G: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad update ``sum_i g_i^PC`` for the ``[K, P]`` task gradients ``G``."""
    return combine_rows(pcgrad_weights(gramian(G), generator), G)


class PCGradParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0  # seeds the random task order


@register("pcgrad")
class PCGrad(GradientMethod):
    Params = PCGradParams
    params: PCGradParams

    def __init__(self, tasks: list[str], params: PCGradParams | None, task_weights: dict[str, float]) -> None:
        super().__init__(tasks, params, task_weights)
        self.generator = seeded_generator(self.params.seed)

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        w = pcgrad_weights(gramian(G), self.generator)
        self._record(w)
        return combine_rows(w, G)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": generator_state(self.generator)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_generator_state(self.generator, state["generator"])
