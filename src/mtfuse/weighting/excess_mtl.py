"""ExcessMTL: robust multi-task learning with excess risks.

He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024
(https://proceedings.mlr.press/v235/he24n.html), Section 3 and Equations 6-9.

Tasks are weighted by how far each is from its own optimum (its excess risk), not by its raw loss, so noisy
tasks with a high irreducible loss do not take over. The excess risk of task i is estimated with a diagonal
(AdaGrad-style) Hessian: ``E_i = sum_p g_ip^2 / sqrt(S_ip + 1e-7)`` with ``S`` the running sum of squared
gradients (Eq. 6-7). After ``n_warmup_steps`` calls with uniform weights (statistics only), ``E`` is divided
by its baseline (the warm-up average; with no warm-up the first call's ``E`` is the baseline and is used
unscaled, as the official code and LibMTL do), and the weights take an exponentiated-gradient step
``w <- softmax(log w + robust_step_size * E)`` (Eq. 9). The update is ``w @ G``; weights start at ``1/K``
(the paper; the official code and LibMTL start at 1). Step for step as TorchJD's ``ExcessMTL``.

Gradient-level: it needs every task's gradient. State: counters and small vectors (JSON) and ``S``
(``[K, P]``, in ``tensor_state_dict``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import column_blocks, combine_rows
from mtfuse.weighting._state import floats
from mtfuse.weighting.base import GradientMethod, register


class ExcessMTLState(NamedTuple):
    weights: torch.Tensor  # [K] float64, on the simplex
    sq_grad_sum: torch.Tensor  # [K, P], G's dtype and device
    baseline: torch.Tensor | None  # [K] float64, set after the warm-up
    warmup_sum: torch.Tensor  # [K] float64
    n_steps: int


def excess_mtl_init(G: torch.Tensor) -> ExcessMTLState:
    K = G.shape[0]
    zeros = torch.zeros(K, dtype=torch.float64)
    return ExcessMTLState(torch.full((K,), 1.0 / K, dtype=torch.float64), torch.zeros_like(G), None, zeros, 0)


def excess_mtl(
    G: torch.Tensor,
    state: ExcessMTLState,
    robust_step_size: float = 1.0,
    n_warmup_steps: int = 0,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ExcessMTLState]:
    """One ExcessMTL step: ``(update, new_state)``. The inputs are not modified, except ``out`` (``[K, P]``),
    which receives the new squared-gradient sum when given (``out=state.sq_grad_sum``: in place)."""
    G = G.detach()
    S = torch.empty_like(G) if out is None else out
    excess = torch.zeros(G.shape[0], dtype=G.dtype, device=G.device)
    for cols in column_blocks(G.shape[1]):  # [K, block] temporaries, not [K, P]
        g, S_b = G[:, cols], S[:, cols]
        sq = g * g
        torch.add(state.sq_grad_sum[:, cols], sq, out=S_b)
        excess += sq.div_(S_b.add(1e-7).sqrt_()).sum(dim=1)
    excess = excess.to("cpu", torch.float64)
    weights, baseline, warm = state.weights, state.baseline, state.warmup_sum
    if state.n_steps < n_warmup_steps:
        new = ExcessMTLState(weights, S, baseline, warm + excess, state.n_steps + 1)
        return combine_rows(weights, G), new
    if baseline is None:
        if n_warmup_steps > 0:
            baseline = warm / n_warmup_steps
            excess = excess / (baseline + 1e-7)
        else:
            baseline = excess
    else:
        excess = excess / (baseline + 1e-7)
    weights = torch.softmax(torch.log(weights) + robust_step_size * excess, dim=0)
    return combine_rows(weights, G), ExcessMTLState(weights, S, baseline, warm, state.n_steps + 1)


class ExcessMTLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    robust_step_size: float = Field(1.0, gt=0.0)
    n_warmup_steps: int = Field(0, ge=0)  # the paper collects statistics for 3 epochs


@register("excess_mtl")
class ExcessMTL(GradientMethod):
    Params = ExcessMTLParams
    params: ExcessMTLParams

    def __init__(
        self, tasks: list[str], params: ExcessMTLParams | None, task_weights: dict[str, float]
    ) -> None:
        super().__init__(tasks, params, task_weights)
        K = len(self.tasks)
        self.w = torch.full((K,), 1.0 / K, dtype=torch.float64)
        self.baseline: torch.Tensor | None = None
        self.warmup_sum = torch.zeros(K, dtype=torch.float64)
        self.n_steps = 0
        self.sq_grad_sum: torch.Tensor | None = None

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        if self.sq_grad_sum is None:
            if self.n_steps:
                raise RuntimeError("excess_mtl: resumed without its tensor state (load_tensor_state_dict)")
            self.sq_grad_sum = torch.zeros_like(G)
        state = ExcessMTLState(self.w, self.sq_grad_sum.to(G), self.baseline, self.warmup_sum, self.n_steps)
        p = self.params
        d, new = excess_mtl(G, state, p.robust_step_size, p.n_warmup_steps, out=state.sq_grad_sum)
        self.w, self.sq_grad_sum, self.baseline, self.warmup_sum, self.n_steps = new
        self._record(self.w)
        return d

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": floats(self.w),
            "baseline": floats(self.baseline),
            "warmup_sum": floats(self.warmup_sum),
            "n_steps": self.n_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        f64 = torch.float64
        self.w = torch.tensor(state["weights"], dtype=f64)
        self.baseline = None if state["baseline"] is None else torch.tensor(state["baseline"], dtype=f64)
        self.warmup_sum = torch.tensor(state["warmup_sum"], dtype=f64)
        self.n_steps = int(state["n_steps"])

    def tensor_state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.sq_grad_sum is None else {"sq_grad_sum": self.sq_grad_sum}

    def load_tensor_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sq_grad_sum = tensors.get("sq_grad_sum")
