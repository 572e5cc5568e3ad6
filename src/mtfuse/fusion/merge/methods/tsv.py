"""TSV-M: Task Singular Vectors merging, low-rank task matrices with decorrelated singular vectors.

Gargiulo, Crisostomi, Bucarelli, Scardapane, Silvestri & Rodolà 2025, "Task Singular Vectors: Reducing Task
Interference in Model Merging" (CVPR), https://arxiv.org/abs/2412.00081; official code
https://github.com/AntoAndGar/task_singular_vectors (``compute_and_sum_svd_mem_reduction``).

For a 2-D tensor (a weight matrix), with T task vectors tau_i = U_i S_i V_i^T (thin SVD) and
k = min(rows, cols) // T (the paper's 1/T fraction of the spectrum, truncated as the official code does):

1. keep the top k singular triplets of each task: U_i[:, :k], S_i[:k], V_i[:, :k];
2. concatenate them: U = [U_1 .. U_T], S = diag(S_1 .. S_T), V = [V_1 .. V_T];
3. orthogonalise U and V by orthogonal Procrustes: U_perp = P Q^T from the SVD U = P Sigma Q^T (same for V);
4. theta = theta_base + scale * U_perp S V_perp^T (``scale`` is the paper's alpha, 1.0 there).

Tensors that are not matrices (biases, LayerNorm, 0-D) get the mean of the task vectors, as in the official
code. Per-model weights scale the task vectors first (tau_i -> w_i tau_i; 1.0 each = the paper). With one
model and a full-rank tau the result is theta_base + scale * tau.

Deviation: when there are more tasks than the matrix's rank allows (k = 0, e.g. BERT's 2 x 768
``token_type_embeddings`` with 3 tasks) the official code returns a zero task vector (the tensor stays at
the base); here the mean of the task vectors is used, as for non-matrix tensors.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.primitives import mean_task_vector, polar_factor, task_vectors


class TsvParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)  # the paper's alpha


def tsv_delta(tvs: list[Tensor]) -> Tensor:
    """The merged task vector of TSV-M (before ``scale``): see the module docstring."""
    if tvs[0].dim() != 2:
        return mean_task_vector(tvs)
    k = min(tvs[0].shape) // len(tvs)
    if k == 0:
        return mean_task_vector(tvs)
    us, ss, vhs = [], [], []
    for tv in tvs:
        u, s, vh = torch.linalg.svd(tv, full_matrices=False)
        us.append(u[:, :k])
        ss.append(s[:k])
        vhs.append(vh[:k])
    u_perp = polar_factor(torch.cat(us, dim=1))
    vh_perp = polar_factor(torch.cat(vhs, dim=0))
    return (u_perp * torch.cat(ss)) @ vh_perp


@merge_method("tsv_m", Params=TsvParams, needs_base=True)
def tsv_m(
    tensors: list[Tensor],
    base: Tensor | None,
    params: TsvParams,
    weights: list[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TSV-M: top 1/T singular vectors of each task vector, orthogonalised (Procrustes), summed (CVPR 2025)."""
    assert base is not None
    tvs = [w * tv for w, tv in zip(weights, task_vectors(tensors, base), strict=True)]
    return base + params.scale * tsv_delta(tvs)
