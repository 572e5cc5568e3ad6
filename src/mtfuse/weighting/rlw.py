"""RLW: random loss weighting.

Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning",
TMLR 2022 (https://arxiv.org/abs/2111.10603), Algorithm 2 (first circulated as "A Closer Look at Loss
Weighting in Multi-Task Learning", 2021).

Every step draws ``lambda = softmax(z)``, ``z ~ N(0, I_K)``, and ``L = sum_t lambda_t L_t``. The weights
sum to 1 (as LibMTL and TorchJD's ``Random``), so on average the loss is 1/K of the ``equal`` weighting's.

Seeded and stateless: the draw for step s comes from a CPU generator seeded with ``step_seed(seed, s)`` (a
32-bit value mixed from both by numpy's ``SeedSequence``; torch's CPU generator only uses 32 bits of a seed),
so the weights depend only on (seed, step) -- every micro-batch of one optimizer step gets the same weights
and a resumed run continues the exact sequence without saving generator state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._state import seeded_generator
from mtfuse.weighting.base import Weighting, register


class RLWParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, ge=0)


def step_seed(seed: int, step: int) -> int:
    """The 32-bit seed of step ``step``'s draw."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint32)[0])


def rlw_weights(num_tasks: int, seed: int, step: int) -> torch.Tensor:
    """``softmax(z)``, ``z ~ N(0, I)`` (float32) from a generator seeded with ``step_seed(seed, step)``."""
    z = torch.randn(num_tasks, generator=seeded_generator(step_seed(seed, step)))
    return torch.softmax(z, dim=0)


@register("rlw")
class RLW(Weighting):
    Params = RLWParams

    def __init__(self, tasks: list[str], params: RLWParams | None, task_weights: dict[str, float]) -> None:
        super().__init__(tasks, params or RLWParams(), task_weights)
        self.step = -1

    def weights(self) -> dict[str, float]:
        if self.step < 0:
            return dict.fromkeys(self.tasks, 1.0 / len(self.tasks))
        w = rlw_weights(len(self.tasks), self.params.seed, self.step)  # type: ignore[union-attr]
        return dict(zip(self.tasks, map(float, w.tolist()), strict=True))

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        self.step = step
        w = self.weights()
        return sum(w[t] * loss for t, loss in losses.items())  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
