"""Isotropic merging: Iso-C (flattened spectrum of the summed task vectors) and Iso-CTS (common plus
task-specific subspaces, then flattened).

Marczak, Magistri, Cygert, Twardowski, Bagdanov & van de Weijer 2025, "No Task Left Behind: Isotropic Model
Merging with Common and Task-Specific Subspaces" (ICML), https://arxiv.org/abs/2502.04959; official code
https://github.com/danielm1405/iso-merging (``src/utils/iso.py``).

For a 2-D tensor (a weight matrix), with r = min(rows, cols):

- ``iso_c``: Delta = sum_i tau_i = U S V^T (thin SVD); S is replaced by its mean (an isotropic spectrum):
  Delta_iso = mean(S) U V^T.
- ``iso_cts``: the common subspace is the top k singular triplets of Delta, k = int(r *
  ``common_space_fraction``) adjusted so that the remaining r - k directions split evenly over the T tasks
  (k = r - round((r - k) / T) T, as the official code); each task contributes the top (r - k) / T
  singular triplets of its task vector projected off the common subspace, (I - U_k U_k^T) tau_i. The
  concatenated left and right singular vectors are orthogonalised by Procrustes (P Q^T of their SVD) and
  all r singular values replaced by their mean.

theta = theta_base + scale * Delta_iso (``scale`` is the paper's alpha, tuned on validation data there).
Tensors that are not matrices get the mean of the task vectors, as in the official code. Per-model weights
scale the task vectors first (tau_i -> w_i tau_i; 1.0 each = the paper). ``iso_cts`` with
``common_space_fraction: 1`` is ``iso_c``.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.primitives import mean_task_vector, polar_factor, task_vectors


class IsoCParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)  # the paper's alpha


class IsoCtsParams(IsoCParams):
    common_space_fraction: float = Field(0.8, gt=0, le=1)  # share of the rank kept for the common subspace


def _weighted(tensors: list[Tensor], base: Tensor, weights: list[float]) -> list[Tensor]:
    return [w * tv for w, tv in zip(weights, task_vectors(tensors, base), strict=True)]


def iso_c_delta(tvs: list[Tensor]) -> Tensor:
    """Iso-C's merged task vector (before ``scale``): the summed task vectors with a flat spectrum."""
    if tvs[0].dim() != 2:
        return mean_task_vector(tvs)
    u, s, vh = torch.linalg.svd(torch.stack(tvs).sum(dim=0), full_matrices=False)
    return (u * s.mean()) @ vh


def iso_cts_delta(tvs: list[Tensor], common_space_fraction: float) -> Tensor:
    """Iso-CTS's merged task vector (before ``scale``): see the module docstring."""
    if tvs[0].dim() != 2:
        return mean_task_vector(tvs)
    n_tasks, r = len(tvs), min(tvs[0].shape)
    k = int(r * common_space_fraction)
    k = max(0, r - round((r - k) / n_tasks) * n_tasks)  # round() as the official code (half to even)
    per_task = (r - k) // n_tasks
    u, s, vh = torch.linalg.svd(torch.stack(tvs).sum(dim=0), full_matrices=False)
    us, ss, vhs = [], [], []
    if per_task:
        u_common = u[:, :k]
        for tv in tvs:
            residual = tv - u_common @ (u_common.T @ tv)  # tau_i with the common subspace projected out
            ut, st, vht = torch.linalg.svd(residual, full_matrices=False)
            us.append(ut[:, :per_task])
            ss.append(st[:per_task])
            vhs.append(vht[:per_task])
    us.append(u[:, :k])
    ss.append(s[:k])
    vhs.append(vh[:k])
    u_perp = polar_factor(torch.cat(us, dim=1))
    vh_perp = polar_factor(torch.cat(vhs, dim=0))
    return (u_perp * torch.cat(ss).mean()) @ vh_perp


@merge_method("iso_c", Params=IsoCParams, needs_base=True)
def iso_c(
    tensors: list[Tensor],
    base: Tensor | None,
    params: IsoCParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Iso-C: the summed task vectors' singular values all set to their mean (ICML 2025)."""
    assert base is not None
    return base + params.scale * iso_c_delta(_weighted(tensors, base, weights))


@merge_method("iso_cts", Params=IsoCtsParams, needs_base=True)
def iso_cts(
    tensors: list[Tensor],
    base: Tensor | None,
    params: IsoCtsParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Iso-CTS: common subspace plus task-specific subspaces, orthogonalised, flat spectrum (ICML 2025)."""
    assert base is not None
    tvs = _weighted(tensors, base, weights)
    return base + params.scale * iso_cts_delta(tvs, params.common_space_fraction)
