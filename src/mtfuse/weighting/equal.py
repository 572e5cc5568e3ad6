"""Equal weighting: L = sum_t L_t (every task weight 1, whatever the tasks' ``loss_weight``).

The classic multi-task objective (Caruana, "Multitask Learning", Machine Learning 28, 1997), and the baseline
that loss-weighting and gradient methods are measured against: tuned well it is hard to beat (Kurin et al.,
"In Defense of the Unitary Scalarization for Deep Multi-Task Learning", NeurIPS 2022,
https://arxiv.org/abs/2201.04122; Xin et al., "Do Current Multi-Task Optimization Methods in Deep Learning Even
Help?", NeurIPS 2022).
"""

from __future__ import annotations

from mtfuse.weighting.base import Weighting, register


@register("equal")
class Equal(Weighting):
    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.tasks, 1.0)
