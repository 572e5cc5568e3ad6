"""Nash-MTL: multi-task learning as a bargaining game.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task Learning as a Bargaining Game",
ICML 2022 (https://arxiv.org/abs/2202.01017), Algorithm 1.

The Nash bargaining solution is ``d = alpha @ G`` with ``alpha > 0`` solving ``(G G^T alpha)_i = 1 / alpha_i``
for every task. As in the official code (and TorchJD's ``NashMTL``) the Gramian is first divided by its
Frobenius norm, the weights are recomputed every ``update_weights_every`` steps (reused in between), and the
update is clipped to norm ``max_norm`` (0 disables the clipping).

Solver: the paper and the official code approximate the solution with a sequence of convex problems solved by
cvxpy (CCP, stopped once ``||G G^T alpha - 1/alpha|| < 1e-3``). Here, without cvxpy: ``alpha`` is the unique
minimiser of the strictly convex ``alpha^T Q alpha / 2 - sum_i log alpha_i`` and is found by damped Newton
steps to machine precision (``_linalg.fair_fixed_point`` with alpha-fairness 1). So results agree with the
reference only up to the reference's own stopping tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import as_np, combine_rows, fair_fixed_point, gramian
from mtfuse.weighting._state import floats
from mtfuse.weighting.base import GradientMethod, register


def nash_mtl_weights(gram: torch.Tensor, max_norm: float = 1.0, max_iters: int = 100) -> torch.Tensor:
    """Nash-MTL weights (float64, CPU) for the Gramian, after the Frobenius normalisation and the clipping."""
    Q = as_np(gram)
    fro = float(np.linalg.norm(Q))
    if fro == 0.0:  # every gradient is zero: nothing to bargain over
        return torch.zeros(Q.shape[0], dtype=torch.float64)
    alpha = fair_fixed_point(Q / fro, 1.0, max_iters)
    return clip_weights(torch.from_numpy(alpha), torch.from_numpy(Q), max_norm)


def clip_weights(alpha: torch.Tensor, Q: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale ``alpha`` so that ``||alpha @ G|| <= max_norm`` (no-op for ``max_norm == 0``)."""
    norm = float(torch.sqrt((alpha @ Q @ alpha).clamp(min=0.0)))
    return alpha * (max_norm / norm) if 0 < max_norm < norm else alpha


def nash_mtl(G: torch.Tensor, max_norm: float = 1.0, max_iters: int = 100) -> torch.Tensor:
    """Nash-MTL update for the ``[K, P]`` task gradients ``G`` (recomputing the weights)."""
    return combine_rows(nash_mtl_weights(gramian(G), max_norm, max_iters), G)


class NashMTLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_norm: float = Field(1.0, ge=0.0)
    update_weights_every: int = Field(1, ge=1)
    max_iters: int = Field(100, ge=1)  # Newton iterations (converges in far fewer)


@register("nash_mtl")
class NashMTL(GradientMethod):
    Params = NashMTLParams
    params: NashMTLParams

    def __init__(
        self, tasks: list[str], params: NashMTLParams | None, task_weights: dict[str, float]
    ) -> None:
        super().__init__(tasks, params, task_weights)
        self.calls = 0
        self.alpha: torch.Tensor | None = None  # the last solved (unclipped) weights

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        gram = gramian(G).detach().to("cpu", torch.float64)
        if self.alpha is None or self.calls % self.params.update_weights_every == 0:
            self.alpha = nash_mtl_weights(gram, max_norm=0.0, max_iters=self.params.max_iters)
        self.calls += 1
        w = clip_weights(self.alpha, gram, self.params.max_norm)
        self._record(w)
        return combine_rows(w, G)

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "alpha": floats(self.alpha)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
        a = state["alpha"]
        self.alpha = None if a is None else torch.tensor(a, dtype=torch.float64)
