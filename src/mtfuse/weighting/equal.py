"""Equal weighting: L = sum_t L_t (every task weight 1, whatever the tasks' ``loss_weight``)."""

from __future__ import annotations

from mtfuse.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("equal")
class Equal(Weighting):
    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.tasks, 1.0)
