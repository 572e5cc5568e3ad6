"""Linear merge: a weighted average of the models' parameters ("model soup").

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time" (ICML), https://arxiv.org/abs/2203.05482. Equal weights (the default) give the
uniform soup. theta = sum_i w_i theta_i / sum_i w_i; with ``normalize: false`` the plain sum_i w_i theta_i.
The base model is not used. Weights must be >= 0 (and not all 0 when normalising).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from mtfuse.errors import ConfigError
from mtfuse.fusion.merge.method import merge_method


class LinearParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    normalize: bool = True  # divide by the sum of the weights


@merge_method("linear", Params=LinearParams, needs_base=False)
def linear(
    tensors: list[Tensor],
    base: Tensor | None,
    params: LinearParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Weighted average of the models' parameters (uniform soup with equal weights)."""
    out = torch.zeros_like(tensors[0])
    for w, t in zip(weights, tensors, strict=True):
        out.add_(t, alpha=w)
    if params.normalize:
        total = sum(weights)
        if total <= 0:
            raise ConfigError(f"merge method 'linear': the weights {weights} sum to 0; cannot normalise")
        out /= total
    return out
