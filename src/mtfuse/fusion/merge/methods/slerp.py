"""SLERP: spherical linear interpolation between exactly two models.

Shoemake 1985, "Animating rotation with quaternion curves" (SIGGRAPH), the formula; used for model merging
by mergekit (Goddard et al. 2024, "Arcee's MergeKit", https://arxiv.org/abs/2403.13257). Each tensor is
flattened to one vector; with Omega the angle between the two vectors,
theta = sin((1-t) Omega)/sin(Omega) theta_0 + sin(t Omega)/sin(Omega) theta_1. When the vectors are nearly
colinear or opposite (|cos Omega| > ``dot_threshold``) or one is ~0, it falls back to linear interpolation
(1-t) theta_0 + t theta_1. ``t = 0`` returns ``tensors[0]``, ``t = 1`` returns ``tensors[1]``. No base, no
per-model weights (``t`` is the weight).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method


class SlerpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    t: float = Field(0.5, ge=0, le=1)  # 0 = the first model, 1 = the second
    dot_threshold: float = Field(0.9995, gt=0, le=1)  # |cos| above this: linear interpolation
    eps: float = Field(1e-8, gt=0)  # norms below this count as zero (then linear interpolation)


@merge_method("slerp", Params=SlerpParams, needs_base=False, num_models=(2, 2), takes_weights=False)
def slerp(
    tensors: list[Tensor],
    base: Tensor | None,
    params: SlerpParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Spherical interpolation between two models at ``t``; linear when they are (nearly) colinear."""
    a, b = tensors
    t = params.t
    if t == 0:
        return a
    if t == 1:
        return b
    lerp = (1 - t) * a + t * b
    na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    if na < params.eps or nb < params.eps:
        return lerp
    cos = float(torch.dot(a.reshape(-1) / na, b.reshape(-1) / nb).clamp(-1, 1))
    if abs(cos) > params.dot_threshold:
        return lerp
    omega = math.acos(cos)
    s = math.sin(omega)
    return (math.sin((1 - t) * omega) / s) * a + (math.sin(t * omega) / s) * b
