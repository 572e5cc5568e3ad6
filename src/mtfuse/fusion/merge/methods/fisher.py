"""Fisher merging: a per-parameter average weighted by each model's diagonal Fisher information.

Matena & Raffel 2022, "Merging Models with Fisher-Weighted Averaging" (NeurIPS),
https://arxiv.org/abs/2111.09832. With F_i the diagonal Fisher of model i (one value per parameter entry)
and w_i the per-model weights (the paper's lambda_i, default 1)::

    theta = sum_i w_i (F_i + floor) theta_i / sum_i w_i (F_i + floor)

``floor`` (the paper code's "fisher floor", 1e-6) keeps the division finite and makes an entry that no model
has information about (every F_i = 0) the plain weighted mean; with ``floor: 0`` such entries fall back to
the weighted mean explicitly. Equal Fishers give the plain weighted average; one model gives that model.

The statistics (``mtfuse.fusion.merge.statistics``, kind ``fisher``): F_i is estimated on input i's own tasks'
train data, ``fisher_examples`` examples per task (a seeded sample), as the mean over examples of the
squared gradient of log p(y | x) w.r.t. the encoder's parameters, one example at a time (per-example
gradients: the square of a batch gradient is not the Fisher). ``label`` picks y:

- ``sampled`` (default): y drawn from the model's own predictive distribution, a one-sample Monte-Carlo
  estimate of the true Fisher E_{y~p(y|x)}[(d log p(y|x))^2], which the paper computes exactly for
  classification by summing over the labels (this costs one backward pass instead of one per label);
- ``predicted``: y = the model's most likely label (argmax), an "empirical Fisher" on the model's own
  predictions;
- ``gold``: y = the train label (the empirical Fisher).

Regression heads use a unit-variance Gaussian likelihood: for ``sampled`` and ``predicted`` the Fisher is
its exact expectation (d mu)^2 (a prediction-as-label gives a zero gradient), for ``gold`` it is
((y - mu) d mu)^2. Token tagging sums log p over the labelled (first sub-word) positions; multi-label
classification over the labels' independent Bernoullis. With ``normalize`` (default), each model's Fisher is
divided by its mean over all encoder entries, so that no model dominates everywhere just because its loss
surface is sharper overall, and ``floor`` reads as a fraction of the average Fisher (MergeLM / FusionBench
normalise by the L2 norm instead).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.errors import DataError
from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.primitives import weighted_mean


class FisherParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fisher_examples: int = Field(256, ge=1)  # train examples per task of each input model
    label: Literal["sampled", "predicted", "gold"] = "sampled"  # the y of d log p(y|x)
    normalize: bool = True  # divide each model's Fisher by its mean over the encoder
    floor: float = Field(1e-6, ge=0, allow_inf_nan=False)  # added to every F_i


@merge_method(
    "fisher",
    Params=FisherParams,
    needs_base=False,
    needs_stats="fisher",
    stats_params=("fisher_examples", "label", "normalize"),
)
def fisher(
    tensors: list[Tensor],
    base: Tensor | None,
    params: FisherParams,
    weights: list[float],
    *,
    stats: list[Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Average weighted per entry by each model's diagonal Fisher (Matena & Raffel 2022)."""
    mean = weighted_mean(tensors, weights, "fisher")
    if stats is None:
        return mean
    num = torch.zeros_like(tensors[0])
    den = torch.zeros_like(tensors[0])
    for w, t, f in zip(weights, tensors, stats, strict=True):
        if f.shape != t.shape:
            raise DataError(f"Fisher of shape {tuple(f.shape)} for a tensor of shape {tuple(t.shape)}")
        fw = w * (f.clamp(min=0) + params.floor)
        num.add_(fw * t)
        den.add_(fw)
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), mean)
