"""GradNorm: gradient normalisation for adaptive loss balancing.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks", ICML 2018 (https://proceedings.mlr.press/v80/chen18a.html), Algorithm 1.

``L = sum_t w_t L_t`` with weights learned so that each task's gradient norm at the last shared layer ``W``,
``G_t = w_t ||grad_W L_t||``, tracks ``mean(G) r_t^alpha`` where ``r_t = L~_t / mean(L~)`` and
``L~_t = L_t / L_t(0)`` (the inverse training rate; ``L(0)`` are the losses of the first step). The weights
descend ``L_grad = sum_t |G_t - mean(G) r_t^alpha|`` (the target a constant) and are renormalised to sum to
the number of tasks after every update.

Hooks: ``needs_shared_layer_grads = True``. Every step (every task in it: step mode 'joint') the loop calls
``combine(losses, step)`` (uses the current weights, constants for the model's backward pass) and then
``gradnorm_step(losses, shared_layer_grads)`` with each task's gradient of its *unweighted* loss with respect
to the last shared layer's weights (``torch.autograd.grad(L_t, W, retain_graph=True)``). The weights are plain
state (JSON), updated by the method's own Adam (``lr``), not by the model's optimizer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.errors import ConfigError
from mtfuse.gradients import last_shared_weight
from mtfuse.weighting._state import Adam, floats
from mtfuse.weighting.base import Weighting, register


class GradNormParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(1.5, ge=0.0)  # restoring force (paper: 0.12 to 3; LibMTL default 1.5)
    lr: float = Field(0.025, gt=0.0)


def gradnorm_loss(
    weights: torch.Tensor,
    losses: torch.Tensor,
    shared_layer_grads: torch.Tensor,
    initial_losses: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """``sum_t |w_t ||grad_t|| - mean(G) r_t^alpha|`` with the target detached; differentiable in ``weights``.

    ``shared_layer_grads``: ``[K, ...]`` gradients of the unweighted task losses at the last shared layer.
    """
    norms = shared_layer_grads.detach().reshape(len(weights), -1).norm(dim=1).to(weights)
    G = weights * norms
    ratio = losses.detach().to(weights) / initial_losses.to(weights)
    target = (G.mean() * (ratio / ratio.mean()) ** alpha).detach()
    return (G - target).abs().sum()


def renormalise(weights: torch.Tensor) -> torch.Tensor:
    """Clip at a small positive value and rescale so the weights sum to their number."""
    w = weights.clamp(min=1e-8)
    return len(w) * w / w.sum()


@register("gradnorm")
class GradNorm(Weighting):
    Params = GradNormParams
    needs_shared_layer_grads: ClassVar[bool] = True

    def __init__(
        self, tasks: list[str], params: GradNormParams | None, task_weights: dict[str, float]
    ) -> None:
        p = params or GradNormParams()
        super().__init__(tasks, p, task_weights)
        self.p = p
        self.w = torch.ones(len(self.tasks), dtype=torch.float64)
        self.initial: torch.Tensor | None = None
        self.adam = Adam(len(self.tasks), p.lr)

    def _vector(self, losses: dict[str, Any]) -> torch.Tensor:
        if set(losses) != set(self.tasks):
            raise ConfigError(
                "weighting 'gradnorm' needs every task's loss at every step (step mode 'joint')"
            )
        vals = [losses[t].detach() if torch.is_tensor(losses[t]) else losses[t] for t in self.tasks]
        return torch.tensor([float(v) for v in vals], dtype=torch.float64)

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, map(float, self.w.tolist()), strict=True))

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        if self.initial is None:
            self.initial = self._vector(losses)  # L(0): the first step's losses
        w = self.weights()
        return sum(w[t] * loss for t, loss in losses.items())  # type: ignore[return-value]

    def before_backward(
        self, losses: dict[str, torch.Tensor], shared_named: list[tuple[str, torch.nn.Parameter]]
    ) -> None:
        """Each task's gradient of its unweighted loss at the last shared layer, then one weight update."""
        W = last_shared_weight(shared_named)
        grads = {
            n: torch.autograd.grad(v, W, retain_graph=True, allow_unused=True)[0] for n, v in losses.items()
        }
        self.gradnorm_step(losses, {n: g if g is not None else torch.zeros_like(W) for n, g in grads.items()})

    def gradnorm_step(
        self, losses: dict[str, torch.Tensor | float], shared_layer_grads: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """One update of the weights (after ``combine`` of the same step); returns the new weights."""
        L = self._vector(losses)
        if self.initial is None:
            self.initial = L
        grads = torch.stack([shared_layer_grads[t].detach().reshape(-1) for t in self.tasks])
        w = self.w.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(gradnorm_loss(w, L, grads, self.initial, self.p.alpha), w)
        self.w = renormalise(self.adam.step(self.w, grad))
        return self.weights()

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": floats(self.w),
            "initial_losses": floats(self.initial),
            "adam": self.adam.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = torch.tensor(state["weights"], dtype=torch.float64)
        init = state["initial_losses"]
        self.initial = None if init is None else torch.tensor(init, dtype=torch.float64)
        self.adam.load_state_dict(state["adam"])
