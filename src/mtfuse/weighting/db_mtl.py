"""DB-MTL: dual-balancing multi-task learning.

Lin et al., "Dual-Balancing for Multi-Task Learning", 2023 (https://arxiv.org/abs/2308.12029).

Gradient-level (as in LibMTL, whose ``DB_MTL`` this follows step for step), balancing twice:

* loss scale: each task's loss is log-transformed, so its gradient is ``g_i / (L_i + eps)``;
* gradient magnitude: an EMA ``m_i <- (1 - beta_t) g_i / (L_i + eps) + beta_t m_i`` (``beta_t =
  beta / t^beta_sigma``, ``m = 0`` at the start) is rescaled so every task has the largest norm:
  ``d = sum_i (max_j ||m_j|| / (||m_i|| + eps)) m_i``.

Needs the losses (``aggregate``'s ``losses``). State: the counter (JSON) and ``m`` (``[K, P]``, in
``tensor_state_dict``). Not a weighting of the current gradients: no ``last_weights``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import column_blocks
from mtfuse.weighting.base import GradientMethod, register


def db_mtl(
    G: torch.Tensor,
    losses: torch.Tensor,
    buffer: torch.Tensor,
    t: int,
    beta: float = 0.9,
    beta_sigma: float = 0.0,
    eps: float = 1e-8,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DB-MTL step (call number ``t >= 1``): ``(update, new_buffer)``. The inputs are not modified,
    except ``out`` (``[K, P]``), which receives ``new_buffer`` when given (``out=buffer``: in place)."""
    denom = losses.detach().to(G) + eps
    c = beta / t**beta_sigma
    new = torch.empty_like(G) if out is None else out
    for cols in column_blocks(G.shape[1]):  # log_grads + c (buffer - log_grads) by blocks: no [K, P]
        torch.lerp(G[:, cols] / denom[:, None], buffer[:, cols], c, out=new[:, cols])
    norms = new.norm(dim=1)
    alpha = norms.max() / (norms + eps)
    return alpha @ new, new


class DBMTLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.9, ge=0.0, le=1.0)
    beta_sigma: float = Field(0.0, ge=0.0)
    eps: float = Field(1e-8, gt=0.0)


@register("db_mtl")
class DBMTL(GradientMethod):
    Params = DBMTLParams
    params: DBMTLParams

    def __init__(self, tasks: list[str], params: DBMTLParams | None, task_weights: dict[str, float]) -> None:
        super().__init__(tasks, params, task_weights)
        self.t = 0
        self.buffer: torch.Tensor | None = None

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G, losses)
        if self.buffer is None and self.t:
            raise RuntimeError("db_mtl: resumed without its tensor state (load_tensor_state_dict)")
        buf = torch.zeros_like(G) if self.buffer is None else self.buffer.to(G)
        self.t += 1
        p = self.params
        d, self.buffer = db_mtl(G.detach(), losses, buf, self.t, p.beta, p.beta_sigma, p.eps, out=buf)
        return d

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])

    def tensor_state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.buffer is None else {"buffer": self.buffer}

    def load_tensor_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.buffer = tensors.get("buffer")
