"""AdaMerging: task arithmetic with coefficients learned by entropy minimisation on unlabelled inputs.

Yang et al. 2024, "AdaMerging: Adaptive Model Merging for Multi-Task Learning" (ICLR),
https://arxiv.org/abs/2310.02575. With tau_k = theta_k - theta_base the task vector of input k::

    task-wise:   theta = theta_base + sum_k lambda_k tau_k
    layer-wise:  theta_l = theta_base,l + sum_k lambda_{k,l} tau_{k,l}     (one lambda per input per group l)

The lambdas (initialised at ``init`` = 0.3, as in the paper) are learned by minimising the sum over tasks of
the mean Shannon entropy of each task head's predictions on unlabelled inputs, with Adam, the encoder run
with the merged parameters through ``torch.func.functional_call`` (no model copy per step). Like the
paper's code, the lambdas are clamped to [0, 1] in the forward pass. ``granularity``:

- ``task``: one lambda per input (task-wise AdaMerging);
- ``layer`` (default): one per input per encoder block: the embeddings, each transformer layer
  (``...layer.<i>.``), the pooler (layer-wise AdaMerging at the granularity of blocks);
- ``tensor``: one per input per parameter tensor (what the paper's code calls layer-wise).

The unlabelled inputs (``mtfuse.fusion.merge.statistics``, kind ``adamerging``) are ``examples`` texts per task
from each input's ``split`` (default ``dev``: the paper adapts on the unlabelled test inputs; the labels are
never read, but choosing the coefficients on the inputs you then score on is transductive: say so when you
report it; ``train`` uses the runs' train texts instead). Entropy: softmax entropy for classification,
mean per-token entropy over real tokens for tagging, mean Bernoulli entropy per label for multi-label;
regression heads have no predictive distribution and contribute nothing (a run with only regression tasks
keeps lambda = ``init``). The paper trains 500 steps at lr 1e-3; the defaults here (``steps`` 50, ``lr``
1e-2) are a CPU-sized budget. With one input there is nothing to adapt: lambda = 1, the input itself.

The tensor-level function below only applies the learned coefficients: ``stats`` holds lambda_k (a 0-d
tensor) for this tensor, one per input.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mtfuse.errors import DataError
from mtfuse.fusion.merge.method import merge_method


class AdaMergingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    granularity: Literal["task", "layer", "tensor"] = "layer"
    init: float = Field(0.3, ge=0, le=1)  # initial lambda
    steps: int = Field(50, ge=0)  # Adam steps on the lambdas
    lr: float = Field(1e-2, gt=0, allow_inf_nan=False)
    batch_size: int = Field(16, ge=1)  # unlabelled inputs per task per step
    examples: int = Field(128, ge=1)  # unlabelled inputs per task (a seeded sample of the split)
    split: Literal["dev", "train"] = "dev"  # where the unlabelled inputs come from (labels unused)


@merge_method(
    "adamerging",
    Params=AdaMergingParams,
    needs_base=True,
    needs_stats="adamerging",
    stats_params=("granularity", "init", "steps", "lr", "batch_size", "examples", "split"),
    takes_weights=False,
)
def adamerging(
    tensors: list[Tensor],
    base: Tensor | None,
    params: AdaMergingParams,
    weights: list[float],
    *,
    stats: list[Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Task arithmetic with learned task-wise or layer-wise coefficients (Yang et al. 2024)."""
    assert base is not None
    if stats is None:
        raise DataError("AdaMerging needs the learned coefficients of every tensor")
    out = base.clone()
    for lam, t in zip(stats, tensors, strict=True):
        if lam.numel() != 1:
            raise DataError(f"AdaMerging coefficient of shape {tuple(lam.shape)}; expected one number")
        out.add_(t - base, alpha=float(lam))
    return out
