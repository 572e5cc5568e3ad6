"""FAMO: fast adaptive multitask optimization.

Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
(https://arxiv.org/abs/2306.03792), as the official code and TorchJD's ``FAMO``.

Loss-level, O(1) per step: with task logits ``w``, ``z = softmax(w)`` and ``l_t = L_t - b_t + eps`` (``b``:
``min_losses``, 0 by default)::

    L = sum_t (z_t / c) log l_t,     c = sum_t z_t / l_t  (a constant in the backward pass)

whose gradient is a convex combination of the task gradients. After the model step the loop recomputes the
losses on the same batch and calls ``update(new_losses)``: with ``delta_t = log l_t(before) - log l_t(after)``
(how much each task improved) the logits take one Adam step (``lr``, L2 ``weight_decay``) along
``d softmax(w) / dw ^T delta``. Tasks that improved less gain weight. ``weights()`` logs ``z``.

Hooks: ``needs_updated_losses = True`` -- call ``update`` once per step, after ``optimizer.step()``, with
every task's loss on the batch just used (one extra forward pass). ``combine`` needs every task's loss.
State (JSON): logits, Adam moments, the last pre-update losses.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.errors import ConfigError
from mtfuse.weighting._state import Adam, floats
from mtfuse.weighting.base import Weighting, register


class FAMOParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.025, ge=0.0)
    weight_decay: float = Field(1e-3, ge=0.0)  # the paper/LibMTL; the official code uses 1e-5
    min_losses: dict[str, float] = {}  # per-task lower bounds b_t (default 0)
    eps: float = Field(1e-8, gt=0.0)


def famo_loss(
    losses: torch.Tensor, logits: torch.Tensor, min_losses: torch.Tensor, eps: float
) -> torch.Tensor:
    """``sum_t (z_t / c) log l_t`` with ``c = sum_t z_t / l_t`` detached."""
    z = torch.softmax(logits.detach(), dim=0).to(losses)
    shifted = losses - min_losses.to(losses) + eps
    c = (z / shifted).sum().detach()
    return ((z / c) * torch.log(shifted)).sum()


def famo_logit_grad(logits: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``d softmax(w) / dw ^T delta`` with ``delta = log before - log after`` (shifted losses)."""
    z = torch.softmax(logits, dim=0)
    delta = torch.log(before) - torch.log(after)
    return z * (delta - (z * delta).sum())


@register("famo")
class FAMO(Weighting):
    Params = FAMOParams
    needs_updated_losses: ClassVar[bool] = True

    def __init__(self, tasks: list[str], params: FAMOParams | None, task_weights: dict[str, float]) -> None:
        p = params or FAMOParams()
        super().__init__(tasks, p, task_weights)
        unknown = sorted(set(p.min_losses) - set(self.tasks))
        if unknown:
            raise ConfigError(f"weighting.min_losses names unknown tasks {unknown}; choose from {self.tasks}")
        self.p = p
        self.b = torch.tensor([p.min_losses.get(t, 0.0) for t in self.tasks], dtype=torch.float64)
        self.logits = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.adam = Adam(len(self.tasks), p.lr, p.weight_decay)
        self.prev: torch.Tensor | None = None

    def _stack(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        if set(losses) != set(self.tasks):
            raise ConfigError("weighting 'famo' needs every task's loss at every step (step mode 'joint')")
        return torch.stack([losses[t] for t in self.tasks])

    def weights(self) -> dict[str, float]:
        z = torch.softmax(self.logits, dim=0)
        return dict(zip(self.tasks, map(float, z.tolist()), strict=True))

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        stacked = self._stack(losses)
        self.prev = stacked.detach().to("cpu", torch.float64)
        return famo_loss(stacked, self.logits, self.b, self.p.eps)

    def update(self, new_losses: dict[str, torch.Tensor]) -> None:
        if self.prev is None:
            raise RuntimeError("famo: update() called before combine()")
        after = self._stack(new_losses).detach().to("cpu", torch.float64)
        eps = self.p.eps
        grad = famo_logit_grad(self.logits, self.prev - self.b + eps, after - self.b + eps)
        self.logits = self.adam.step(self.logits, grad)

    def state_dict(self) -> dict[str, Any]:
        return {"logits": floats(self.logits), "adam": self.adam.state_dict(), "prev": floats(self.prev)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.logits = torch.tensor(state["logits"], dtype=torch.float64)
        self.adam.load_state_dict(state["adam"])
        self.prev = None if state["prev"] is None else torch.tensor(state["prev"], dtype=torch.float64)
