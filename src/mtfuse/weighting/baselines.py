"""Sum and mean of the task gradients: the baselines every gradient method is compared with.

``sum`` gives the same update as the loss-level ``equal`` weighting (sum of the task losses); ``mean`` is it
divided by the number of tasks (TorchJD's ``Sum`` / ``Mean`` aggregators). Both ignore the tasks'
``loss_weight`` (use the loss-level ``static`` weighting for fixed weights). They are the unitary
scalarisation every gradient method is compared with (Kurin et al., "In Defense of the Unitary Scalarization
for Deep Multi-Task Learning", NeurIPS 2022, https://arxiv.org/abs/2201.04122), here at the gradient level
so that the comparison runs the same joint step.
"""

from __future__ import annotations

import torch

from mtfuse.weighting.base import GradientMethod, register


def grad_sum(G: torch.Tensor) -> torch.Tensor:
    """``sum_k G_k``."""
    return G.sum(dim=0)


def grad_mean(G: torch.Tensor) -> torch.Tensor:
    """``(1/K) sum_k G_k``."""
    return G.mean(dim=0)


@register("sum")
class Sum(GradientMethod):
    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        self._record(torch.ones(G.shape[0], dtype=torch.float64))
        return grad_sum(G)


@register("mean")
class Mean(GradientMethod):
    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        self._record(torch.full((G.shape[0],), 1.0 / G.shape[0], dtype=torch.float64))
        return grad_mean(G)
