"""SCE: Select (high-variance entries), Calculate (per-model weights), Erase (minority signs).

Wan, Zhong, Yang, Chen & Quan 2024, "FuseChat: Knowledge Fusion of Chat Models" (arXiv preprint),
https://arxiv.org/abs/2408.07990, the merging stage; implemented as mergekit 0.1.5's ``sce`` (Goddard et al.
2024, "Arcee's MergeKit", https://arxiv.org/abs/2403.13257), which this follows.

With task vectors tau_i = theta_i - theta_base:

1. Select: with ``select_topk`` < 1, keep in every tau_i only the entries where the variance across the
   models is among the top ``select_topk`` fraction of the entries with nonzero variance;
2. Calculate: model i gets the weight w_i = mean(tau_i^2) / sum_j mean(tau_j^2) (of the selected tau_i);
3. Erase: per entry, the sign of sum_i tau_i is elected and only the models that agree with it are kept;
   theta = theta_base + sum_i w_i m_i tau_i / sum_i w_i m_i (an entry no model agrees with stays at the base).

The weights are computed, so the method takes no per-model weights. Differences from mergekit (the same
results otherwise): mergekit falls back to uniform weights when sum_j mean(tau_j^2) < 1e-6, an absolute
threshold that fine-tuning task vectors (entries ~1e-3) often fall under; here only when that sum is 0.
mergekit clamps the divisor sum_i w_i m_i at 1e-6; here only a divisor of 0 is replaced (by 1). The top-k
count rounds (the convention of ``primitives``) where mergekit truncates.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.primitives import _count, disjoint_merge, sign_consensus, task_vectors


class SceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    select_topk: float = Field(1.0, gt=0, le=1)  # fraction of high-variance entries kept (1 = all, mergekit)


def sce_select_mask(tvs: list[Tensor], fraction: float) -> Tensor:
    """A bool mask of the ``fraction`` of entries with the largest variance across the models (of those whose
    variance is nonzero)."""
    var = torch.stack(tvs).var(dim=0, unbiased=False).reshape(-1)
    k = _count(fraction, int(torch.count_nonzero(var)))
    mask = torch.zeros(var.numel(), dtype=torch.bool, device=var.device)
    if k:
        mask[torch.topk(var, k, sorted=False).indices] = True
    return mask.reshape(tvs[0].shape)


@merge_method("sce", Params=SceParams, needs_base=True, takes_weights=False)
def sce(
    tensors: list[Tensor],
    base: Tensor | None,
    params: SceParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SCE: keep high-variance entries, weight models by their mean squared task vector, erase minority signs."""
    assert base is not None
    tvs = task_vectors(tensors, base)
    if params.select_topk < 1:
        mask = sce_select_mask(tvs, params.select_topk)
        tvs = [tv * mask for tv in tvs]
    energy = [float(tv.square().mean()) if tv.numel() else 0.0 for tv in tvs]
    total = sum(energy)
    w = [e / total for e in energy] if total > 0 else [1.0 / len(tvs)] * len(tvs)
    signs = sign_consensus(tvs, None, "sum")
    return base + disjoint_merge(tvs, w, signs, normalize=True)
