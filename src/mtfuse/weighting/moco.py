"""MoCo: multi-objective gradient correction (stochastic MGDA with tracked gradients).

Fernando et al., "Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent Approach",
ICLR 2023.

Stochastic MGDA is biased; MoCo tracks each task's gradient and moves the weights by projected gradient steps
instead of solving the min-norm problem exactly. At its t-th call (t = 1, 2, ...)::

    Y      <- Y - beta_t (Y - G)                                 beta_t  = beta  / t^beta_sigma
    lambda <- proj_simplex(lambda - gamma_t (Y Y^T + rho I) lambda)  gamma_t = gamma / t^gamma_sigma
    d       = lambda @ Y

with ``Y = 0`` and ``lambda = 1/K`` at the start (as LibMTL). The paper projects onto the simplex (used here);
LibMTL's version uses a softmax instead and rescales each gradient to ``L_i g_i / ||g_i||`` first.
Defaults are LibMTL's (beta 0.5, beta_sigma 0.5, gamma 0.1, gamma_sigma 0.5, rho 0).

State: the counter and ``lambda`` (JSON) and the tracked gradients ``Y`` (``[K, P]``, in
``tensor_state_dict``). ``last_weights`` are ``lambda``: the weights of the tracked gradients ``Y``, not of G.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import as_np, combine_rows, gramian, project_simplex
from mtfuse.weighting._state import floats
from mtfuse.weighting.base import GradientMethod, register


def moco(
    G: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    t: int,
    beta: float = 0.5,
    beta_sigma: float = 0.5,
    gamma: float = 0.1,
    gamma_sigma: float = 0.5,
    rho: float = 0.0,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One MoCo step (call number ``t >= 1``): ``(update, new_y, new_lambda)``. The inputs are not modified,
    except ``out`` (``[K, P]``), which receives ``new_y`` when given (``out=y`` updates it in place)."""
    c = beta / t**beta_sigma  # y - c (y - G) = lerp(y, G, c): one pass, no [K, P] temporaries
    y_new = torch.lerp(y, G, c) if out is None else torch.lerp(y, G, c, out=out)
    Q = as_np(gramian(y_new))
    lam_np = lam.detach().to("cpu", torch.float64).numpy()
    step = (gamma / t**gamma_sigma) * (Q @ lam_np + rho * lam_np)
    lam_new = torch.from_numpy(project_simplex(lam_np - step))
    return combine_rows(lam_new, y_new), y_new, lam_new


class MoCoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.5, gt=0.0, le=1.0)
    beta_sigma: float = Field(0.5, ge=0.0)
    gamma: float = Field(0.1, gt=0.0)
    gamma_sigma: float = Field(0.5, ge=0.0)
    rho: float = Field(0.0, ge=0.0)


@register("moco")
class MoCo(GradientMethod):
    Params = MoCoParams
    params: MoCoParams

    def __init__(self, tasks: list[str], params: MoCoParams | None, task_weights: dict[str, float]) -> None:
        super().__init__(tasks, params, task_weights)
        self.t = 0
        self.lam = torch.full((len(self.tasks),), 1.0 / len(self.tasks), dtype=torch.float64)
        self.y: torch.Tensor | None = None

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        if self.y is None:
            if self.t:
                raise RuntimeError("moco: resumed without its tensor state (load_tensor_state_dict)")
            self.y = torch.zeros_like(G)
        self.t += 1
        p = self.params
        y = self.y.to(G)
        d, self.y, self.lam = moco(
            G.detach(), y, self.lam, self.t, p.beta, p.beta_sigma, p.gamma, p.gamma_sigma, p.rho, out=y
        )
        self._record(self.lam)
        return d

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "lambda": floats(self.lam)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.lam = torch.tensor(state["lambda"], dtype=torch.float64)

    def tensor_state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.y is None else {"y": self.y}

    def load_tensor_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.y = tensors.get("y")
