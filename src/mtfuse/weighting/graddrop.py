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

from mtfuse.weighting._linalg import column_blocks
from mtfuse.weighting._state import generator_state, seeded_generator, set_generator_state
from mtfuse.weighting.base import GradientMethod, register


def graddrop(
    G: torch.Tensor, leak: float | torch.Tensor = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """GradDrop update for the ``[K, P]`` task gradients ``G`` (``leak``: one value, or one per task).

    Per coordinate, ``sum_i (leak_i + (1 - leak_i) M_i) g_i`` is computed as ``leak . g`` plus the
    ``(1 - leak)``-weighted sum of the positive parts where ``P > U``, or of the negative parts where
    ``P < U``: the same sum, from two [K, block] temporaries instead of a mask per task."""
    K, P_ = G.shape
    if K == 0 or P_ == 0:
        return torch.zeros(P_, dtype=G.dtype, device=G.device)
    leak_t = torch.as_tensor(leak, dtype=G.dtype, device=G.device).expand(K).contiguous()
    U = torch.rand(P_, generator=generator, dtype=G.dtype).to(G.device)  # one draw for all P, as TorchJD
    out = torch.empty(P_, dtype=G.dtype, device=G.device)
    for cols in column_blocks(P_):  # the maths is per coordinate
        g, u = G[:, cols], U[cols]
        plus = g.clamp(min=0)
        minus = g - plus  # exactly the negative parts
        mass = plus.sum(dim=0) - minus.sum(dim=0)
        # 0 / 0 where every gradient is 0: purity 1/2 there (those coordinates get 0 whatever it is)
        purity = (g.sum(dim=0) / mass).add_(1.0).mul_(0.5).nan_to_num_(nan=0.5)
        side = torch.sign(purity - u)  # +1: the positive parts pass; -1: the negative ones; 0 (a tie): none
        # arithmetic, not boolean masks: torch.where and comparisons are several times slower on the CPU
        o = out[cols]
        torch.mv(g.T, leak_t, out=o)
        o.addcmul_(side.clamp(min=0), torch.mv(plus.T, 1.0 - leak_t))
        o.addcmul_(side.clamp(max=0), torch.mv(minus.T, 1.0 - leak_t), value=-1.0)
    return out


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
