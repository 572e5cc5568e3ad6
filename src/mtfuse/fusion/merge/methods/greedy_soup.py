"""Greedy soup: average the fine-tuned models that, added one at a time, do not lower the held-out score.

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time" (ICML), https://arxiv.org/abs/2203.05482, Recipe 1 (greedy soup). The inputs are
sorted by their own score on the selection data (best first); the soup starts as the best one and each next
input is added to the (uniform) average only if the average's score does not drop::

    theta = sum_i s_i theta_i / sum_i s_i,    s_i = 1 if input i is in the soup, else 0

Soups are over runs of the same task(s), so inputs may share tasks: the merged model keeps ONE head per task,
the head of the best-scoring run that has the task (the head the soup was selected with; the record says
which). When the runs have different tasks, the score of a soup is the average over all their tasks. The
score is the GLUE-style average of ``mtfuse.metrics.aggregate`` on ``split``: ``dev`` (the runs' dev split;
selecting and reporting on the same data is optimistic) or ``train-holdout`` (train rows the runs did not
train on: needs runs trained on a ``subset.train``). The soup's selection score is never below the score of
its first ingredient alone, which, when the runs share their tasks, is the best run's own score.

The statistics (``mtfuse.fusion.merge.soup``, kind ``soup``) are the s_i: ``stats`` holds s_i (a 0-d tensor)
for every tensor, one per input.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from mtfuse.errors import DataError
from mtfuse.fusion.merge.method import merge_method
from mtfuse.fusion.merge.primitives import weighted_mean


class GreedySoupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: Literal["dev", "train-holdout"] = "dev"  # the data the soup is selected on


@merge_method(
    "greedy_soup",
    Params=GreedySoupParams,
    needs_base=False,
    needs_stats="soup",
    stats_params=("split",),
    takes_weights=False,
    repeated_tasks=True,
)
def greedy_soup(
    tensors: list[Tensor],
    base: Tensor | None,
    params: GreedySoupParams,
    weights: list[float],
    *,
    stats: list[Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniform average of the ingredients the greedy recipe kept (Wortsman et al. 2022)."""
    if stats is None:
        raise DataError("greedy soup needs the selected ingredients")
    keep = [float(s) for s in stats]
    if any(k < 0 for k in keep) or sum(keep) <= 0:
        raise DataError(f"greedy soup: ingredient weights {keep} must be >= 0 with at least one > 0")
    return weighted_mean(tensors, keep, "greedy_soup")
