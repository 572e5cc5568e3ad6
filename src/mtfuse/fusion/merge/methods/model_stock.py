"""Model Stock: move from the base toward the average of the fine-tuned models by a ratio set by their angle.

Jang et al. 2024, "Model Stock: All we need is just a few fine-tuned models" (ECCV),
https://arxiv.org/abs/2403.19522. With k fine-tuned models, tau_i = theta_i - theta_base and cos the mean
pairwise cosine between the tau_i, t = k cos / (1 + (k - 1) cos) and
theta = t * mean_i(theta_i) + (1 - t) * theta_base. The paper computes it per layer; here per tensor, or per
row (the first dimension) with ``filter_wise: true``. The paper's derivation assumes cos >= 0 (fine-tuned
models on the same side of the base); cos is clamped to [0, 1] so that t stays in [0, 1] (mergekit does not
clamp and can extrapolate far when cos < 0). A zero task vector counts as cos 0. Needs at least 2 models,
no per-model weights.
"""

from __future__ import annotations

import itertools

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method


class ModelStockParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filter_wise: bool = False  # one ratio per row (first dimension) instead of one per tensor


@merge_method(
    "model_stock", Params=ModelStockParams, needs_base=True, num_models=(2, None), takes_weights=False
)
def model_stock(
    tensors: list[Tensor],
    base: Tensor | None,
    params: ModelStockParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Interpolate between the base and the models' average with t = k cos / (1 + (k-1) cos)."""
    assert base is not None
    rows = base.shape[0] if params.filter_wise and base.dim() >= 2 else 1
    tvs = [(t - base).reshape(rows, -1) for t in tensors]
    norms = [torch.linalg.vector_norm(tv, dim=1) for tv in tvs]
    cosines = []
    for (a, na), (b, nb) in itertools.combinations(zip(tvs, norms, strict=True), 2):
        prod = na * nb
        dot = (a * b).sum(dim=1)
        cosines.append(torch.where(prod > 0, dot / torch.where(prod > 0, prod, 1.0), 0.0))
    cos = torch.stack(cosines).mean(dim=0).clamp(0.0, 1.0)
    k = len(tensors)
    ratio = k * cos / (1 + (k - 1) * cos)
    ratio = ratio.reshape(rows, *[1] * (base.dim() - 1)) if rows > 1 else ratio.reshape(())
    average = torch.stack(tensors).mean(dim=0)
    return ratio * average + (1 - ratio) * base
