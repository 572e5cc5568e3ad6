"""The loss-weighting interface and its registry.

Two kinds of methods share one registry (``WEIGHTINGS``) and one constructor
``cls(tasks, params, task_weights)``:

* **loss-level** (:class:`Weighting`): ``combine(losses, step)`` turns a dict of task losses into the one loss
  that is back-propagated. Some keep learnable parameters or need a hook from the loop; the flags and no-op
  hooks below say which, so the loop can call them unconditionally.
* **gradient-level** (:class:`GradientMethod`): the loop computes the matrix ``G`` of per-task gradients of
  the shared parameters (``[K, P]``, rows in ``self.tasks`` order), calls ``aggregate(G, losses, step)`` and
  writes the returned ``[P]`` vector into the shared parameters' ``.grad``. Each method's math is a
  module-level pure function in its own file (used by ``aggregate`` and by the tests).

Checkpoints: ``state_dict()`` is JSON (small state); ``tensor_state_dict()`` holds the large tensors some
gradient methods keep (one row per task and shared parameter: MoCo, DB-MTL, ExcessMTL) and is meant for a
safetensors file beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
from pydantic import BaseModel

from mtfuse.errors import ConfigError
from mtfuse.registry import Registry


class Weighting:
    """Combine a dict of task losses into one loss. Subclasses keep any state JSON-serialisable."""

    Params: type[BaseModel] | None = None
    name: ClassVar[str] = ""  # the registry name (set by ``register``)

    is_gradient_method: ClassVar[bool] = False
    """True for :class:`GradientMethod`: the loop must compute every task's gradient at every step."""
    needs_updated_losses: ClassVar[bool] = False
    """True when the loop must recompute the task losses on the same batch after ``optimizer.step()`` and pass
    them to :meth:`update` (FAMO)."""
    needs_shared_layer_grads: ClassVar[bool] = False
    """True when the loop must pass per-task gradients of the last shared layer to the method (GradNorm)."""

    def __init__(self, tasks: list[str], params: BaseModel | None, task_weights: dict[str, float]) -> None:
        self.tasks = list(tasks)
        self.params = params
        self.task_weights = dict(task_weights)

    def weights(self) -> dict[str, float]:
        """Current per-task weights (logged every evaluation)."""
        raise NotImplementedError

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        w = self.weights()
        return sum(w[t] * loss for t, loss in losses.items())  # type: ignore[return-value]

    # ---- hooks for the loop (no-ops unless a method needs them) ----------------------------------------

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters of the method; the loop adds them to the optimizer (no weight decay)."""
        return []

    def end_epoch(self, avg_losses: dict[str, float] | None = None) -> None:
        """Called by the loop once at the end of every epoch (DWA)."""

    def update(self, new_losses: dict[str, torch.Tensor]) -> None:
        """Called after ``optimizer.step()`` with the losses recomputed on the same batch, only when
        ``needs_updated_losses`` (FAMO)."""

    def before_backward(
        self, losses: dict[str, torch.Tensor], shared_named: list[tuple[str, torch.nn.Parameter]]
    ) -> None:
        """Called by the loop after ``combine`` and before the backward pass of the same losses (GradNorm
        reads each task's gradient at the last shared layer here)."""

    def after_step(self, recompute_losses: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Called by the loop after ``optimizer.step()``; ``recompute_losses()`` gives the same batches'
        losses under the updated weights (FAMO's second forward). Methods that need it call it."""
        if self.needs_updated_losses:
            self.update(recompute_losses())

    # ---- checkpoints ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def tensor_state_dict(self) -> dict[str, torch.Tensor]:
        """Large tensor state (saved as safetensors, not JSON); empty for most methods."""
        return {}

    def load_tensor_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        pass


class GradientMethod(Weighting):
    """A gradient-level method: aggregates the ``[K, P]`` matrix of task gradients into one update direction.

    ``G`` rows follow ``self.tasks``. ``losses`` is the detached ``[K]`` vector of the same tasks' losses
    (some methods rescale by it). ``last_weights`` holds, after each call, the effective weights ``w`` with
    ``aggregate(G) == w @ G`` when the method is a weighting of the gradients (``None`` otherwise);
    ``weights()`` reports them for logging (an empty dict before the first step or when undefined).
    """

    is_gradient_method: ClassVar[bool] = True

    def __init__(self, tasks: list[str], params: BaseModel | None, task_weights: dict[str, float]) -> None:
        super().__init__(tasks, params, task_weights)
        if params is None and self.Params is not None:
            self.params = self.Params()
        self.last_weights: dict[str, float] | None = None

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        return dict(self.last_weights) if self.last_weights is not None else {}

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        raise ConfigError(
            f"weighting '{self.name or type(self).__name__}' is a gradient-level method: it needs step mode "
            "'joint' (every task's gradient at every step), not a combined loss"
        )

    # helpers for subclasses
    def _check(self, G: torch.Tensor, losses: torch.Tensor | None = None) -> None:
        if G.ndim != 2 or G.shape[0] != len(self.tasks):
            raise ValueError(f"G must be [num_tasks={len(self.tasks)}, num_params], got {tuple(G.shape)}")
        if losses is not None and losses.shape != (len(self.tasks),):
            raise ValueError(f"losses must be [{len(self.tasks)}], got {tuple(losses.shape)}")

    def _record(self, w: torch.Tensor | None) -> None:
        self.last_weights = None if w is None else dict(zip(self.tasks, map(float, w.tolist()), strict=True))


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")

W = TypeVar("W", bound=type[Weighting])


def register(name: str) -> Callable[[W], W]:
    """Register a weighting class under ``name`` and remember the name on the class (for messages)."""

    def deco(cls: W) -> W:
        cls.name = name
        return WEIGHTINGS.register(name)(cls)

    return deco
