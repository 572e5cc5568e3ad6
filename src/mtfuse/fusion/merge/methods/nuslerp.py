"""NuSLERP: spherical interpolation of two models' task vectors (or weights), per tensor, row or column.

Shoemake 1985, "Animating rotation with quaternion curves" (SIGGRAPH), the formula; the method is mergekit
0.1.5's ``nuslerp`` (Goddard et al. 2024, "Arcee's MergeKit: A Toolkit for Merging Large Language Models",
EMNLP Industry Track, https://arxiv.org/abs/2403.13257), which this follows.

With two models and per-model weights w_0, w_1 the interpolation factor is t = w_1 / (w_0 + w_1) (0.5 when
the weights sum to ~0; equal weights by default). With ``task_vectors: true`` (the default, mergekit's
behaviour when a base model is given) theta = theta_base + slerp(t, tau_0, tau_1), otherwise
theta = slerp(t, theta_0, theta_1) (the base is then not used, though the interface still needs it).
slerp(t, a, b) = (sin((1-t) Omega) a + sin(t Omega) b) / sin(Omega), Omega the angle between a and b, over
the whole flattened tensor (``flatten: true``, default), or else separately for each vector along the last
dimension (each row of a matrix) or, with ``row_wise: true``, along the first (each column; mergekit's
naming). Colinear vectors (1 - cos^2 <= 1e-16) are interpolated linearly.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method


class NuslerpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_vectors: bool = True  # interpolate theta_i - theta_base (True) or the weights themselves
    flatten: bool = True  # one angle for the whole tensor (mergekit's nuslerp_flatten)
    row_wise: bool = False  # without flatten: vectors along the first dimension (mergekit's nuslerp_row_wise)


def nuslerp_vectors(t: float, v0: Tensor, v1: Tensor, dim: int = -1, flatten: bool = True) -> Tensor:
    """slerp(t, v0, v1) of the whole flattened tensors (``flatten``) or of their vectors along ``dim``."""
    shape = v0.shape
    if flatten or v0.dim() == 0:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)

    def unit(x: Tensor) -> Tensor:
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    cos = (unit(v0) * unit(v1)).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= 1e-16
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, spherical)
    if not flatten and dim != -1 and out.dim() > 1:
        out = out.transpose(dim, -1)
    return out.reshape(shape)


@merge_method("nuslerp", Params=NuslerpParams, needs_base=True, num_models=(2, 2))
def nuslerp(
    tensors: list[Tensor],
    base: Tensor | None,
    params: NuslerpParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """NuSLERP: slerp of two task vectors (or models) with t = w_1 / (w_0 + w_1), per tensor or per row."""
    assert base is not None
    total = weights[0] + weights[1]
    t = 0.5 if abs(total) < 1e-6 else weights[1] / total
    dim = 0 if params.row_wise else -1
    a, b = tensors
    if not params.task_vectors:
        return nuslerp_vectors(t, a, b, dim=dim, flatten=params.flatten)
    return base + nuslerp_vectors(t, a - base, b - base, dim=dim, flatten=params.flatten)
