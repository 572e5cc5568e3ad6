"""WUDI-Merging: a data-free merged task vector that minimises each task's interference, guided by the task
vectors themselves.

Cheng, Xiong, Wei, Zhu & Yuan 2025, "Whoever Started the Interference Should End It: Guiding Data-Free Model
Merging via Task Vectors" (ICML), https://arxiv.org/abs/2503.08099; official code
https://github.com/nathanielyvo/WUDI-Merging (``vit/wudi_main.py``, ``nlp_roberta/lamassu.py``).

For a 2-D tensor (a linear layer's weight) the merged task vector tau_m minimises

    L(tau_m) = sum_i ||(tau_m - tau_i) tau_i^T||_F^2 / ||tau_i||_F^2

(the rows of tau_i approximately span the layer's inputs for task i, so this bounds the interference on
them) by ``iterations`` steps of Adam (betas 0.9 / 0.999, eps 1e-8, no weight decay: torch's defaults, as
the official code) with learning rate ``lr``, starting from sum_i tau_i. Defaults: 300 iterations, lr 1e-5
(the official ViT code and the paper; the official RoBERTa code uses 2e-5). The gradient is computed in
closed form, 2 (tau_m A - B) with A = sum_i tau_i^T tau_i / ||tau_i||^2 and B = sum_i tau_i tau_i^T tau_i /
||tau_i||^2 (precomputed), and Adam is written out, so the result needs no autograd (it also runs under
``torch.inference_mode``) and is deterministic: no randomness is involved. Task vectors that are 0 add
nothing to L and are left out of it. theta = theta_base + scale * tau_m (``scale`` 1 in the paper, which
tunes no coefficient). Per-model weights scale the task vectors first (tau_i -> w_i tau_i; 1.0 each = the
paper).

Tensors that are not matrices get the mean of the task vectors. The official ViT code optimises only the
attention and MLP weight matrices and leaves every other tensor at the base; here every 2-D tensor is
optimised (embeddings included) and the rest averaged. Cost: O(rows * cols^2) per iteration per matrix.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.primitives import mean_task_vector, task_vectors

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, used by the official code
EPS = 1e-8


class WudiParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)  # added to the base with this factor (1 = paper)
    iterations: int = Field(300, ge=0)  # Adam steps per matrix
    lr: float = Field(1e-5, gt=0, allow_inf_nan=False)  # Adam learning rate


def wudi_loss(merged: Tensor, tvs: list[Tensor]) -> Tensor:
    """L(tau_m) = sum_i ||(tau_m - tau_i) tau_i^T||_F^2 / ||tau_i||_F^2 over the nonzero tau_i."""
    total = merged.new_zeros(())
    for tv in tvs:
        norm2 = tv.square().sum()
        if norm2 > 0:
            total = total + ((merged - tv) @ tv.T).square().sum() / norm2
    return total


def wudi_delta(tvs: list[Tensor], iterations: int, lr: float) -> Tensor:
    """WUDI's merged task vector (before ``scale``): Adam on :func:`wudi_loss` from the sum of the tvs."""
    if tvs[0].dim() != 2:
        return mean_task_vector(tvs)
    x = torch.stack(tvs).sum(dim=0)
    a = x.new_zeros(x.shape[1], x.shape[1])
    b = torch.zeros_like(x)
    for tv in tvs:
        norm2 = float(tv.square().sum())
        if norm2 == 0:
            continue
        gram = tv.T @ tv / norm2
        a += gram
        b += tv @ gram
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    b1, b2 = BETAS
    for step in range(1, iterations + 1):
        grad = 2 * (x @ a - b)
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(1 - b2**step)).add_(EPS)
        x.addcdiv_(m, denom, value=-lr / (1 - b1**step))
    return x


@merge_method("wudi", Params=WudiParams, needs_base=True)
def wudi(
    tensors: list[Tensor],
    base: Tensor | None,
    params: WudiParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WUDI: per matrix, Adam on sum_i ||(tau_m - tau_i) tau_i^T||^2 / ||tau_i||^2 from sum_i tau_i (ICML 2025)."""
    assert base is not None
    tvs = [w * tv for w, tv in zip(weights, task_vectors(tensors, base), strict=True)]
    return base + params.scale * wudi_delta(tvs, params.iterations, params.lr)
