"""GLS: geometric loss strategy.

Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss
Strategy for Multi-Task Learning", CVPR Workshops 2019
(https://openaccess.thecvf.com/content_CVPRW_2019/papers/WAD/Chennupati_MultiNet_Multi-Stream_Feature_Aggregation_and_Geometric_Loss_Strategy_for_Multi-Task_CVPRW_2019_paper.pdf).

``L = (prod_t L_t)^(1/n)`` over the n tasks in the step (computed as ``exp(mean(log L_t))``): the gradient
weights each task by ``L / (n L_t)``, so tasks with small losses are not drowned out (these effective weights
are what ``weights()`` logs, from the last step; 1 before it). Losses must be positive. With one task per step
it is that task's loss. Same as TorchJD's ``GeometricMean``.
"""

from __future__ import annotations

import torch

from mtfuse.weighting.base import Weighting, register


def gls_loss(losses: torch.Tensor) -> torch.Tensor:
    """Geometric mean of the (positive) losses."""
    return torch.exp(torch.log(losses).mean())


@register("gls")
class GLS(Weighting):
    def __init__(self, tasks: list[str], params: None, task_weights: dict[str, float]) -> None:
        super().__init__(tasks, params, task_weights)
        self._w = dict.fromkeys(self.tasks, 1.0)

    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def combine(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        stacked = torch.stack(list(losses.values()))
        loss = gls_loss(stacked)
        eff = (loss.detach() / (len(losses) * stacked.detach())).tolist()
        self._w.update(zip(losses, map(float, eff), strict=True))
        return loss
