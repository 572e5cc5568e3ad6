"""The out-of-fold protocol: parameters (weights, a bag, a meta-learner) are tuned on k-1 folds of the dev
split and applied to the held-out fold; the reported score is that of the out-of-fold predictions, so no
example is scored by parameters tuned on it. The parameters saved for ``predict`` are tuned once more on the
whole dev split. Folds are over examples (a token task's sentences stay whole)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble.members import TaskArrays
from mtfuse.fusion.ensemble.methods import METHODS, VOTE_FALLBACK, EnsembleMethod, TuningOptions
from mtfuse.metrics import task_score


def kfold_split(n_examples: int, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint folds of example ids covering ``range(n_examples)`` (seeded shuffle), each sorted."""
    perm = np.random.default_rng(seed).permutation(n_examples)
    return [np.sort(f) for f in np.array_split(perm, k)]


def check_folds(task: str, n_examples: int, k: int, where: str = "") -> None:
    """k-fold tuning needs k >= 2 and at least 2 dev examples per fold."""
    if k < 2:
        raise MtfuseError(f"--folds must be at least 2 (got {k})")
    if n_examples < 2 * k:
        src = f" ({where})" if where else ""
        raise MtfuseError(
            f"task '{task}'{src}: the dev split has {n_examples} examples, too few for {k}-fold "
            f"cross-validation (need at least {2 * k}); lower --folds"
        )


@dataclass
class TaskFusion:
    """One task's result: out-of-fold outputs and scores, per-fold and final parameters."""

    ta: TaskArrays
    method: str
    out: np.ndarray  # out-of-fold fused outputs [N, C] (all-dev outputs when nothing is tuned)
    metrics: dict[str, float]
    params: dict[str, Any]  # tuned on the whole dev split: what predict uses
    fold_params: list[dict[str, Any]]
    note: str | None = None
    warning: str | None = None  # a tuned ensemble that scores below its best member out-of-fold


def kfold_oof(
    ta: TaskArrays, method: EnsembleMethod, k: int, options: TuningOptions
) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """Out-of-fold fused outputs ``[N, C]``, the parameters tuned on each fold's complement, and the
    parameters tuned on the whole dev split. Folds are over examples (a token task's sentences stay whole)."""
    out = np.zeros(ta.P.shape[1:], dtype=np.float64)
    fold_params = []
    for fold in kfold_split(ta.n_examples, k, options.seed):
        train = np.setdiff1d(np.arange(ta.n_examples), fold)
        params = method.fit(ta.subset(train), options)
        units = ta.units_of(fold)
        out[units] = method.apply(ta.P[:, units], params, ta.type)
        fold_params.append(params)
    return out, fold_params, method.fit(ta, options)


def fuse_task(ta: TaskArrays, method_name: str, k: int, options: TuningOptions) -> TaskFusion:
    """Fuse one task with one method under the protocol (k-fold out-of-fold when the method is tuned)."""
    note = None
    method = METHODS.get(method_name)
    if method.votes and ta.type.continuous:
        note = f"'{method_name}' does not apply to a {ta.type.name} output (a value, not a vote); the mean is used"
        method_name = VOTE_FALLBACK
        method = METHODS.get(method_name)
    if method.tuned:
        out, fold_params, params = kfold_oof(ta, method, k, options)
    else:
        params = method.fit(ta, options)
        out, fold_params = method.apply(ta.P, params, ta.type), []
    metrics = ta.score(out)
    warning = below_best_member(ta, method_name, metrics) if method.tuned else None
    return TaskFusion(ta, method_name, out, metrics, params, fold_params, note, warning)


def below_best_member(ta: TaskArrays, method: str, metrics: dict[str, float]) -> str | None:
    """A warning when a tuned ensemble's out-of-fold score is below that of its best member (whose dev score
    is out-of-fold too: nothing of a member is tuned on dev). Tuning by the NLL can put all the weight on a
    worse member when the members are under-confident."""
    scores = [task_score(s) for s in ta.member_scores()]
    best = int(np.argmax(scores))
    mine = task_score(metrics)
    if mine >= scores[best]:
        return None
    return (
        f"task '{ta.task}': the tuned '{method}' ensemble scores {mine:.2f} out-of-fold, below its best member "
        f"({ta.members[best]}: {scores[best]:.2f}); its tuning favoured worse members (e.g. under-confident "
        "members mislead an NLL fit): prefer that member alone, 'mean' or 'weighted_metric'"
    )


def protocol_text(method: str, k: int, seed: int) -> str:
    if not METHODS.get(method).tuned:
        return (
            f"'{method}' tunes nothing: the members' dev predictions are fused as they are and scored on the "
            "whole dev split."
        )
    return (
        f"'{method}' is tuned by {k}-fold cross-validation on the dev split (folds over examples, whole "
        f"sentences for token tasks; shuffle seed {seed}). Each example's prediction comes from parameters "
        f"tuned on the other {k - 1} folds; metrics.json and predictions/ report these out-of-fold "
        "predictions, so no example is scored by parameters tuned on it. The parameters saved in "
        "ensemble.json for predict are tuned once more on the whole dev split."
    )
