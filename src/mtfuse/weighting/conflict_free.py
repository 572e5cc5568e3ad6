"""ConFIG: conflict-free inverse gradients.

Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks", ICLR 2025
(https://arxiv.org/abs/2408.11104), Equation 2 (TorchJD's ``ConFIG``).

With unit task gradients ``u_i = g_i / ||g_i||`` (rows of U), the direction ``d = U^+ 1`` has the same inner
product (1) with every ``u_i``, hence the same cosine with every task gradient when they are linearly
independent. The update is ``(sum_i g_i . d_hat) d_hat`` with ``d_hat = d / ||d||``.

Computed on the Gramian: ``U^+ = U^T (U U^T)^+`` so ``d = sum_i (a_i / ||g_i||) g_i`` with ``a = (U U^T)^+
1``; the result is ``w @ G`` (effective weights logged). Zero gradients get a zero unit row, as in TorchJD.
The pseudo-inverse cut-off applies to ``U U^T`` here and to ``U`` in TorchJD: they can differ on nearly
dependent gradients only.
"""

from __future__ import annotations

import torch

from mtfuse.weighting._linalg import combine_rows, gramian
from mtfuse.weighting.base import GradientMethod, register


def config_weights(gram: torch.Tensor) -> torch.Tensor:
    """Effective weights ``w`` (float64, CPU) with ``config(G) == w @ G``."""
    Q = gram.detach().to("cpu", torch.float64)
    K = Q.shape[0]
    norms = Q.diagonal().clamp(min=0.0).sqrt()
    inv = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    Qu = Q * inv[:, None] * inv[None, :]  # U U^T
    a = torch.linalg.pinv(Qu) @ torch.ones(K, dtype=torch.float64)
    c = a * inv  # d = c @ G
    d_norm = (c @ Q @ c).clamp(min=0.0).sqrt()
    if d_norm == 0:
        return torch.zeros(K, dtype=torch.float64)
    length = (Q @ c).sum() / d_norm  # sum_i g_i . d_hat
    return c * (length / d_norm)


def config(G: torch.Tensor) -> torch.Tensor:
    """ConFIG update for the ``[K, P]`` task gradients ``G``."""
    return combine_rows(config_weights(gramian(G)), G)


@register("config")
class ConFIG(GradientMethod):
    def aggregate(self, G: torch.Tensor, losses: torch.Tensor, step: int) -> torch.Tensor:
        self._check(G)
        w = config_weights(gramian(G))
        self._record(w)
        return combine_rows(w, G)
