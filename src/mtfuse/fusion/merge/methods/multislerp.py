"""Multi-SLERP: barycentric spherical interpolation of any number of models' task vectors (or weights).

Buss & Fillmore 2001, "Spherical averages and applications to spherical splines and interpolation" (ACM
Transactions on Graphics 20(2)), spherical weighted averages; this one-step tangent-space version is
mergekit 0.1.5's ``multislerp`` (Goddard et al. 2024, "Arcee's MergeKit: A Toolkit for Merging Large
Language Models", EMNLP Industry Track, https://arxiv.org/abs/2403.13257; described in
https://goddard.blog/posts/multislerp-wow-what-a-cool-idea), which this follows.

With x_i = tau_i (``task_vectors: true``, the default) or theta_i, each flattened, and weights w_i
(divided by their sum when ``normalize_weights``): u_i = x_i / (||x_i|| + eps); m = sum_i w_i u_i /
||sum_i w_i u_i||; the tangent vectors u_i - <u_i, m> m are averaged with the weights into g; the result is
exp_m(g) = cos(|g|) m + sin(|g|) g / |g| (|g| + eps in both, as mergekit), scaled to sum_i w_i ||x_i|| (and
added to the base with task vectors). One model is returned unchanged. When sum_i w_i u_i is ~0 (opposite
vectors with balancing weights) two models are interpolated linearly and more are an error, as in mergekit,
except where every x_i is 0 (a tensor no run changed, such as the pooler of mean-pooled runs): every input is
then the same point, and their spherical mean is that point, so it is returned (mergekit raises there too).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.errors import ConfigError, DataError
from mtfuse.fusion.merge.method import merge_method


class MultislerpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_vectors: bool = True  # interpolate theta_i - theta_base (True) or the weights themselves
    normalize_weights: bool = True  # divide the weights by their sum
    eps: float = Field(1e-8, gt=0)  # stabiliser of the norms (mergekit's default)


@merge_method("multislerp", Params=MultislerpParams, needs_base=True)
def multislerp(
    tensors: list[Tensor],
    base: Tensor | None,
    params: MultislerpParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Multi-SLERP: weighted mean on the hypersphere via one tangent-space step, rescaled to the mean norm."""
    assert base is not None
    if len(tensors) == 1:
        return tensors[0]
    eps = params.eps
    x = torch.stack(tensors)
    if params.task_vectors:
        x = x - base
    flat = x.reshape(x.shape[0], -1)
    w = torch.tensor(weights, dtype=x.dtype, device=x.device)
    if params.normalize_weights:
        if float(w.sum()) <= 0:
            raise ConfigError(f"merge method 'multislerp': the weights {weights} sum to 0; cannot normalise")
        w = w / w.sum()
    norms = torch.linalg.vector_norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w[:, None]).sum(dim=0)
    mean_norm = torch.linalg.vector_norm(mean)
    offset = base if params.task_vectors else torch.zeros_like(base)
    if float(mean_norm) < eps:
        if not bool(norms.any()):  # every input is the same point: the mean of one point is that point
            return offset + x[0]
        if len(tensors) == 2:
            return offset + (w[0] * x[0] + w[1] * x[1])
        raise DataError(
            "multislerp: the weighted mean of the normalised inputs is 0 (opposite inputs whose weights "
            "balance out); use other weights"
        )
    mean = mean / mean_norm
    tangents = units - (units * mean).sum(dim=-1, keepdim=True) * mean
    g = (tangents * w[:, None]).sum(dim=0)
    g_norm = torch.linalg.vector_norm(g) + eps
    out = mean * torch.cos(g_norm) + g * (torch.sin(g_norm) / g_norm)
    out = out * (norms.squeeze(-1) * w).sum()
    return offset + out.reshape(base.shape)
