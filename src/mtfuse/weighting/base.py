"""The loss-weighting interface and its registry."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel

from mtfuse.registry import Registry


class Weighting:
    """Combine a dict of task losses into one loss. Subclasses keep any state JSON-serialisable."""

    Params: type[BaseModel] | None = None

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

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")
