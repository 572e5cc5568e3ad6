"""GradDrop: gradient sign dropout.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign: Optimizing Deep Multitask Models
with Gradient Sign Dropout", NeurIPS 2020 (https://arxiv.org/abs/2010.06808), Algorithm 1 lines 10-15.

Per coordinate, the positive sign purity ``P = (1 + sum_i g_i / sum_i |g_i|) / 2`` is compared with one
uniform draw ``U``: if ``P > U`` only the positive task gradients pass, if ``P < U`` only the negative ones;
``leak`` lets a fraction of every gradient through regardless. The update is
``sum_i (leak + (1 - leak) M_i) * g_i``.

The paper applies it to gradients of activations (summed over the batch after a sign correction); here, as in
TorchJD's ``GradDrop``, it is applied to the shared parameters' gradients. ``U`` is drawn on the CPU from the
method's seeded generator, in G's dtype (so it matches TorchJD drawing ``torch.rand`` from the global
generator with the same seed), then moved to G's device: a ``[P]`` draw per step. Coordinates where every task
gradient is zero get ``P = 1/2`` (TorchJD divides 0 by 0 there). Not a weighting of whole gradients: no
``last_weights``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._state import generator_state, seeded_generator, set_generator_state
from mtfuse.weighting.base import GradientMethod, register


def graddrop(
    G: torch.Tensor, leak: float | torch.Tensor = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """GradDrop update for the ``[K, P]`` task gradients ``G`` (``leak``: one value, or one per task)."""
    K, P_ = G.shape
    if K == 0 or P_ == 0:
        return torch.zeros(P_, dtype=G.dtype, device=G.device)
    leak_t = torch.as_tensor(leak, dtype=G.dtype, device=G.device).expand(K)
    total, mass = G.sum(dim=0), G.abs().sum(dim=0)
    purity = torch.where(mass > 0, 0.5 * (1.0 + total / torch.where(mass > 0, mass, 1.0)), 0.5)
    U = torch.rand(P_, generator=generator, dtype=G.dtype).to(G.device)
    keep = ((purity > U) & (G > 0)) | ((purity < U) & (G < 0))  # [K, P]
    return ((leak_t[:, None] + (1.0 - leak_t[:, None]) * keep) * G).sum(dim=0)


class GradDropParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    leak: float = Field(0.0, ge=0.0, le=1.0)
    seed: int = 0


@register("graddrop")
class GradDrop(GradientMethod):
    Params = GradDropParams
    params: GradDropParams

    def __init__(
        self, tasks: list[str], params: GradDropParams | None, task_weights: dict[str, float]
    ) -> None:
        super().__init__(tasks, params, task_weights)
        self.generator = seeded_generator(self.params.seed)

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        return graddrop(G, self.params.leak, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": generator_state(self.generator)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_generator_state(self.generator, state["generator"])
