"""RegMean: merge each Linear layer by the closed-form least-squares fit of all models' outputs.

Jin et al. 2023, "Dataless Knowledge Fusion by Merging Weights of Language Models" (ICLR),
https://arxiv.org/abs/2212.09849. For a Linear layer y = x W (paper layout, W: [in, out]) with X_i the inputs
the layer sees in model i on model i's own data, the merged W minimises sum_i ||X_i W - X_i W_i||^2, which is

    W = (sum_i G_i)^-1 sum_i G_i W_i,        G_i = X_i^T X_i  ([in, in], the Gram matrix)

Hugging Face stores ``nn.Linear.weight`` as [out, in] (y = x W_hf^T, W_hf = W^T), so here

    W_hf = (sum_i w_i W_hf,i G~_i) (sum_i w_i G~_i)^-1

with per-model weights w_i (default 1) and the paper's off-diagonal scaling
G~ = alpha G + (1 - alpha) diag(G) (alpha = 1: the exact least squares; alpha = 0: a per-input-feature
weighted average; the paper tunes alpha, values around 0.9 and below help when the Grams are
ill-conditioned). Solved in float64; a singular system (a feature no input ever activates) is solved with a
tiny ridge towards the weighted mean, so unconstrained directions get the mean instead of 0. Every other
parameter (biases, LayerNorm, embeddings) and any 2-D tensor without Gram matrices is the weighted mean, as
in the paper. One model gives that model.

The statistics (``mtfuse.fusion.merge.statistics``, kind ``gram``): for every ``nn.Linear`` of the encoder, keyed
by its weight's name, G_i = X_i^T X_i / n_i over the n_i real (non-padding) tokens of ``gram_examples``
train examples per task of input i (the mean, not the sum, so that each model's data counts once whatever
its length; with equal n_i it is the paper's objective up to a common factor).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.errors import DataError
from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.primitives import weighted_mean


class RegMeanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(0.9, ge=0, le=1)  # scale of the Gram matrices' off-diagonal entries
    gram_examples: int = Field(256, ge=1)  # train examples per task of each input model


def scale_off_diagonal(gram: Tensor, alpha: float) -> Tensor:
    """alpha G + (1 - alpha) diag(G): the off-diagonal entries scaled by alpha, the diagonal kept."""
    if alpha == 1.0:
        return gram
    out = alpha * gram
    out.diagonal().copy_(gram.diagonal())  # exactly the diagonal (not alpha d + (1 - alpha) d)
    return out


def regmean_solve(weights_hf: list[Tensor], grams: list[Tensor], w: list[float], alpha: float) -> Tensor:
    """(sum_i w_i W_i G~_i)(sum_i w_i G~_i)^-1 in float64 for [out, in] weights W_i and [in, in] Grams G_i."""
    a = torch.zeros_like(grams[0], dtype=torch.float64)
    b = torch.zeros_like(weights_hf[0], dtype=torch.float64)
    for wi, W, G in zip(w, weights_hf, grams, strict=True):
        g = scale_off_diagonal(G.to(torch.float64), alpha)
        a.add_(g, alpha=wi)
        b.add_(W.to(torch.float64) @ g, alpha=wi)
    # W a = b  <=>  a^T W^T = b^T, and a is symmetric
    try:
        out = torch.linalg.solve(a, b.T).T
        if bool(torch.isfinite(out).all()):
            return out
    except RuntimeError:  # torch.linalg.LinAlgError: singular
        pass
    # ridge towards the weighted mean: argmin sum_i w_i ||X_i (W - W_i)||^2 + eps ||W - mean||^2
    mean = sum(wi * W.to(torch.float64) for wi, W in zip(w, weights_hf, strict=True)) / sum(w)
    eps = 1e-8 * float(torch.diagonal(a).abs().mean().clamp(min=1e-30))
    eye = torch.eye(a.shape[0], dtype=torch.float64)
    return torch.linalg.solve(a + eps * eye, (b + eps * mean).T).T


@merge_method(
    "regmean",
    Params=RegMeanParams,
    needs_base=False,
    needs_stats="gram",
    stats_params=("gram_examples",),
)
def regmean(
    tensors: list[Tensor],
    base: Tensor | None,
    params: RegMeanParams,
    weights: list[float],
    *,
    stats: list[Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Linear layers: closed-form least squares over the models' inputs (Gram matrices); the rest: mean."""
    mean = weighted_mean(tensors, weights, "regmean")
    if stats is None:
        return mean
    if tensors[0].dim() != 2:
        raise DataError(
            f"RegMean Gram matrices given for a {tensors[0].dim()}-D tensor (only Linear weights)"
        )
    n_in = tensors[0].shape[1]
    for g in stats:
        if tuple(g.shape) != (n_in, n_in):
            raise DataError(f"Gram matrix of shape {tuple(g.shape)} for a weight with {n_in} inputs")
    if sum(weights) <= 0 or all(float(torch.diagonal(g).abs().sum()) == 0 for g in stats):
        return mean
    return regmean_solve(tensors, stats, weights, params.alpha).to(tensors[0].dtype)
