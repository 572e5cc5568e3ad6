"""Karcher mean: the weighted Riemannian centre of mass of the models on the unit hypersphere, rescaled.

Karcher 1977, "Riemannian center of mass and mollifier smoothing" (Communications on Pure and Applied
Mathematics 30(5)), the mean; as a merge method in mergekit (Goddard et al. 2024, "Arcee's MergeKit: A
Toolkit for Merging Large Language Models", EMNLP Industry Track, https://arxiv.org/abs/2403.13257;
mergekit 0.1.5's ``karcher`` method, whose reference it gives as https://arxiv.org/abs/2603.04972).

Each tensor is flattened and normalised, u_i = theta_i / ||theta_i||. Starting from the normalised weighted
Euclidean mean of the u_i (u_0 of the first model if that mean is ~0), the fixed-point iteration
m <- exp_m(sum_i a_i theta_i / sin(theta_i) (u_i - cos(theta_i) m)), theta_i = arccos(<m, u_i>), runs for at
most ``max_iter`` steps and stops when the tangent step is below ``tol``; the result is
(sum_i a_i ||theta_i||) m. No base. Per-model weights are normalised to a_i = w_i / sum_j w_j (equal weights
= mergekit, which takes none); models with norm <= ``tol`` take no part in the direction. One model, or
identical models, are returned unchanged.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.errors import ConfigError
from mtfuse.fusion.merge.method import merge_method


class KarcherParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_iter: int = Field(10, ge=0)  # fixed-point iterations (mergekit's default)
    tol: float = Field(1e-5, gt=0)  # stopping threshold on the tangent step; smaller norms count as zero


@merge_method("karcher", Params=KarcherParams, needs_base=False)
def karcher(
    tensors: list[Tensor],
    base: Tensor | None,
    params: KarcherParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Karcher mean on the unit sphere, rescaled by the weighted mean norm (Karcher 1977; mergekit)."""
    if len(tensors) == 1:
        return tensors[0]
    total = sum(weights)
    if total <= 0:
        raise ConfigError(f"merge method 'karcher': the weights {weights} sum to 0; cannot average")
    alphas = [w / total for w in weights]
    tol = params.tol
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    units = [t / n if float(n) > 0 else torch.zeros_like(t) for t, n in zip(tensors, norms, strict=True)]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid or sum(alphas[i] for i in valid) <= 0:
        return torch.zeros_like(tensors[0])
    a_sum = sum(alphas[i] for i in valid)
    a = [alphas[i] / a_sum for i in valid]
    us = [units[i] for i in valid]

    mean = torch.zeros_like(us[0])
    for ai, u in zip(a, us, strict=True):
        mean += ai * u
    mean_norm = torch.linalg.vector_norm(mean)
    mean = us[0].clone() if float(mean_norm) < tol else mean / mean_norm
    for _ in range(params.max_iter):
        tangent = torch.zeros_like(mean)
        for ai, u in zip(a, us, strict=True):
            dot = torch.dot(mean.reshape(-1), u.reshape(-1)).clamp(-1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += ai * (theta / torch.sin(theta)) * (u - dot * mean)
        step = torch.linalg.vector_norm(tangent)
        if float(step) < tol:
            break
        mean = torch.cos(step) * mean + torch.sin(step) * (tangent / step)
        unit_norm = torch.linalg.vector_norm(mean)
        if float(unit_norm) > tol:
            mean = mean / unit_norm
    scale = sum(ai * n for ai, n in zip(alphas, norms, strict=True))
    return scale * mean
