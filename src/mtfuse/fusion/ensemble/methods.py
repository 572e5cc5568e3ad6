"""The ensemble method registry: each method is a ``fit`` (tunes parameters on (a fold of) the dev split)
and an ``apply`` (fuses members' outputs with those parameters), both over :mod:`combiners` and the task
type's own decisions; the protocol (:mod:`protocol`) decides what they are tuned and scored on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtfuse.fusion.ensemble import stack as stack_mod
from mtfuse.fusion.ensemble.combiners import (
    bagged_caruana_selection,
    caruana_selection,
    majority_vote,
    nll,
    tune_weights_metric,
    tune_weights_nll,
    uniform,
    weighted_mean,
)
from mtfuse.fusion.ensemble.members import TaskArrays
from mtfuse.registry import Registry
from mtfuse.tasks.types import TaskType


@dataclass(frozen=True)
class TuningOptions:
    """Tuning knobs shared by the methods."""

    seed: int = 0
    n_samples: int = 64  # weighted_metric: random simplex candidates
    n_iter: int = 25  # caruana: bag size
    bags: int = 20  # caruana_bagged: selections averaged (Caruana et al. 2004 use 20)
    bag_fraction: float = 0.5  # caruana_bagged: each member's chance to be drawn into a bag (theirs: 0.5)
    inner_folds: int = 3  # stack: inner cross-validation for the regularisation strength


@dataclass(frozen=True)
class EnsembleMethod:
    """An ensemble method: ``fit`` tunes parameters on (a fold of) the dev split, ``apply`` fuses outputs.

    ``fit(ta, options) -> params`` (JSON-ready); ``apply(P, params, task_type) -> [N, C]``."""

    name: str
    tuned: bool
    fit: Callable[[TaskArrays, TuningOptions], dict[str, Any]]
    apply: Callable[[np.ndarray, dict[str, Any], TaskType], np.ndarray]
    summary: str
    votes: bool = False  # counts decisions: no meaning for continuous outputs (regression), the mean is used


METHODS: Registry[EnsembleMethod] = Registry("ensemble method")


def _register(method: EnsembleMethod) -> None:
    METHODS.register(method.name)(method)


def _apply_weights(P: np.ndarray, params: dict[str, Any], task_type: TaskType) -> np.ndarray:
    return weighted_mean(P, params["weights"])


def _apply_vote(P: np.ndarray, params: dict[str, Any], task_type: TaskType) -> np.ndarray:
    """Majority vote of the members' decisions (the majority rule of Kittler et al., TPAMI 1998)."""
    return majority_vote(P, task_type.votes)


def _fit_uniform(ta: TaskArrays, o: TuningOptions) -> dict[str, Any]:
    """Equal weights: the mean (sum) rule of Kittler et al., TPAMI 1998; averaging as in Dietterich 2000."""
    return {"weights": uniform(ta.n_members).tolist()}


def _fit_nll(ta: TaskArrays, o: TuningOptions) -> dict[str, Any]:
    """Simplex weights minimising held-out NLL: a linear stacked combiner constrained to be a convex
    combination (Breiman 1996, "Stacked regressions")."""
    return {"weights": tune_weights_nll(ta.P, ta.y, ta.type).tolist()}


def _fit_metric(ta: TaskArrays, o: TuningOptions) -> dict[str, Any]:
    """Simplex weights maximising the task's own dev metric by seeded random search (the weighted-average
    baseline of Caruana et al., ICML 2004)."""
    return {"weights": tune_weights_metric(ta.P, ta.task_score, o.n_samples, o.seed).tolist()}


def _fit_caruana(ta: TaskArrays, o: TuningOptions) -> dict[str, Any]:
    """Greedy forward selection with replacement from the library (Caruana et al., ICML 2004)."""
    w, hist = caruana_selection(ta.P, ta.task_score, o.n_iter, lambda out: nll(out, ta.y, ta.type))
    return {"weights": w.tolist(), "history": hist}


def _fit_caruana_bagged(ta: TaskArrays, o: TuningOptions) -> dict[str, Any]:
    """Bagged ensemble selection: the mean weights of selections over random halves of the library (Caruana
    et al., ICML 2004, section 2.3)."""
    w = bagged_caruana_selection(
        ta.P,
        ta.task_score,
        o.n_iter,
        lambda out: nll(out, ta.y, ta.type),
        bags=o.bags,
        fraction=o.bag_fraction,
        seed=o.seed,
    )
    return {"weights": w.tolist()}


_register(EnsembleMethod("mean", False, _fit_uniform, _apply_weights, "mean of the members' probabilities"))
_register(
    EnsembleMethod(
        "soft_vote", False, _fit_uniform, _apply_weights, "argmax of the mean probability", votes=True
    )
)
_register(
    EnsembleMethod(
        "vote",
        False,
        _fit_uniform,
        _apply_vote,
        "majority vote, ties broken by the mean probability",
        votes=True,
    )
)
_register(
    EnsembleMethod("weighted_nll", True, _fit_nll, _apply_weights, "weighted mean, weights minimise the NLL")
)
_register(
    EnsembleMethod(
        "weighted_metric", True, _fit_metric, _apply_weights, "weighted mean, weights maximise the metric"
    )
)
_register(
    EnsembleMethod(
        "caruana", True, _fit_caruana, _apply_weights, "greedy selection with replacement (Caruana 2004)"
    )
)
_register(
    EnsembleMethod(
        "caruana_bagged",
        True,
        _fit_caruana_bagged,
        _apply_weights,
        "mean of greedy selections over random halves of the members (Caruana 2004)",
    )
)
_register(
    EnsembleMethod(
        "stack", True, stack_mod.fit_meta, stack_mod.apply_meta, "meta-learner on members' probabilities"
    )
)

#: what a voting method becomes on continuous outputs (regression), where a vote has no meaning
VOTE_FALLBACK = "mean"
