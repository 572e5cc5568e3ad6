"""GradVac: gradient vaccine.

Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
Massively Multilingual Models", ICLR 2021 (https://arxiv.org/abs/2010.05874).

Like PCGrad, but instead of only removing conflicts it steers each pair towards an EMA target cosine
``phi_hat[i, j]``: for task i and every other task j (random order), with
``phi = cos(g_i^PC, g_j)``, if ``phi < phi_hat[i, j]``::

    g_i^PC += ||g_i^PC|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
              / (||g_j|| sqrt(1 - phi_hat^2)) * g_j

and always ``phi_hat[i, j] <- (1 - beta) phi_hat[i, j] + beta phi``. The update is ``sum_i g_i^PC``.
State: ``phi_hat`` (K x K, starts at zero, so the first step is PCGrad) and the generator.

Computed on the Gramian with the per-task visiting order ``torch.randperm(K - 1)`` over the other tasks,
exactly like TorchJD's ``GradVac`` (which draws from the global generator). The EMA update happens for every
visited pair, as in the paper and TorchJD (LibMTL only updates it when the correction fires).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.weighting._linalg import combine_rows, gramian
from mtfuse.weighting._state import floats, generator_state, seeded_generator, set_generator_state
from mtfuse.weighting.base import GradientMethod, register


def gradvac_weights(
    gram: torch.Tensor,
    phi_hat: torch.Tensor,
    beta: float = 0.5,
    eps: float = 1e-8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, new_phi_hat)``: effective weights (``gradvac(G) == w @ G``) and the updated EMA targets."""
    Q = gram.detach().to("cpu", torch.float64)
    phi_t = phi_hat.detach().to("cpu", torch.float64).clone()
    K = Q.shape[0]
    C = torch.eye(K, dtype=torch.float64)
    for i in range(K):
        cG = C[i] @ Q  # g_i^PC . g_k for every k
        others = [j for j in range(K) if j != i]
        for idx in torch.randperm(len(others), generator=generator).tolist():
            j = others[idx]
            norm_i = (cG * C[i]).sum().clamp(min=0.0).sqrt()
            norm_j = Q[j, j].clamp(min=0.0).sqrt()
            phi = cG[j] / (norm_i * norm_j + eps)
            target = phi_t[i, j]
            if phi < target:
                s_phi = (1.0 - phi * phi).clamp(min=0.0).sqrt()
                s_tgt = (1.0 - target * target).clamp(min=0.0).sqrt()
                c = norm_i * (target * s_phi - phi * s_tgt) / (norm_j * s_tgt + eps)
                C[i, j] += c
                cG = cG + c * Q[j]
            phi_t[i, j] = (1.0 - beta) * target + beta * phi
    return C.sum(dim=0), phi_t


def gradvac(
    G: torch.Tensor,
    phi_hat: torch.Tensor,
    beta: float = 0.5,
    eps: float = 1e-8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(update, new_phi_hat)`` for the ``[K, P]`` task gradients ``G``."""
    w, phi = gradvac_weights(gramian(G), phi_hat, beta, eps, generator)
    return combine_rows(w, G), phi


class GradVacParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.5, ge=0.0, le=1.0)  # EMA rate of the target cosines (TorchJD/LibMTL default)
    eps: float = Field(1e-8, ge=0.0)
    seed: int = 0


@register("gradvac")
class GradVac(GradientMethod):
    Params = GradVacParams
    params: GradVacParams

    def __init__(
        self, tasks: list[str], params: GradVacParams | None, task_weights: dict[str, float]
    ) -> None:
        super().__init__(tasks, params, task_weights)
        self.generator = seeded_generator(self.params.seed)
        self.phi_hat = torch.zeros(len(self.tasks), len(self.tasks), dtype=torch.float64)

    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        w, self.phi_hat = gradvac_weights(
            gramian(G), self.phi_hat, self.params.beta, self.params.eps, self.generator
        )
        self._record(w)
        return combine_rows(w, G)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": generator_state(self.generator), "phi_hat": floats(self.phi_hat)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_generator_state(self.generator, state["generator"])
        K = len(self.tasks)
        self.phi_hat = torch.tensor(state["phi_hat"], dtype=torch.float64).reshape(K, K)
