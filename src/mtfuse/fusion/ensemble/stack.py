"""Stacking (stacked generalisation, Wolpert 1992): a meta-learner on the members' dev probabilities, tuned and
scored like every ensemble method.

The members' dev predictions are already held out from their own training, so they are the meta-learner's
training inputs; ``mtfuse.fusion.ensemble.protocol.kfold_oof`` fits the meta-learner on k-1 folds of the dev split
and scores it on the held-out fold (the reported score is out-of-fold), and inside each fit the
regularisation strength is chosen by an inner cross-validation on that fit's own examples:

The task type names its meta-learner (``TaskType.stack_learner``, a name in :data:`LEARNERS`):

* ``multinomial`` (classification and token tasks): multinomial logistic regression (scikit-learn ``LogisticRegression``, L2)
  on the concatenated member probabilities ``[M * C]`` per example (per word for token tasks); ``C`` from
  ``C_GRID`` by inner k-fold held-out log loss (folds over examples, so a sentence's words stay together);
* ``per_label`` (multi-label tasks): one binary logistic regression per label on the members' probabilities
  of that label;
* ``ridge`` (regression): ridge regression (scikit-learn ``RidgeCV``, efficient leave-one-out over ``ALPHA_GRID``) on the
  members' predicted values.

The fitted models are saved as JSON (``coef``, ``intercept``, ``classes``, the chosen ``C`` / ``alpha``) and
applied by :func:`apply_meta`'s own forward pass: nothing is pickled.

Pooled encoder features ("the members' pooled features") are not available: run directories store
predictions, not encoder outputs, so :func:`check_features` refuses them with a clear error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mtfuse.errors import MtfuseError
from mtfuse.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from mtfuse.fusion.ensemble.members import TaskArrays
    from mtfuse.fusion.ensemble.methods import TuningOptions
    from mtfuse.tasks.types import TaskType

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
ALPHA_GRID = tuple(float(a) for a in np.logspace(-3, 3, 13))
FEATURES = ("probs", "probs+pooled")
EPS = 1e-12


def check_features(features: str, method: str) -> None:
    """Only the members' probabilities can be stacked from run directories."""
    if features not in FEATURES:
        raise MtfuseError(f"unknown --features '{features}'; choose from [{', '.join(FEATURES)}]")
    if features == "probs":
        return
    if method != "stack":
        raise MtfuseError(f"--features {features} applies to --method stack only")
    raise MtfuseError(
        "--features probs+pooled is not available: run directories store the members' predictions, not their "
        "pooled encoder features; stack with --features probs"
    )


def stack_features(P: np.ndarray) -> np.ndarray:
    """``[M, N, C]`` member outputs -> ``[N, M * C]`` meta-learner inputs (member-major)."""
    m, n, c = P.shape
    return np.ascontiguousarray(P.transpose(1, 0, 2).reshape(n, m * c))


# ------------------------------------------------------------------------------------------ logistic


def logistic_to_json(model: Any) -> dict[str, Any]:
    """A fitted scikit-learn ``LogisticRegression`` as JSON: classes, coefficients, intercepts."""
    return {
        "model": "logistic",
        "classes": [int(c) for c in model.classes_],
        "coef": np.asarray(model.coef_, dtype=np.float64).tolist(),
        "intercept": np.asarray(model.intercept_, dtype=np.float64).tolist(),
    }


def logistic_forward(X: np.ndarray, meta: dict[str, Any], n_classes: int) -> np.ndarray:
    """Class probabilities ``[N, n_classes]`` of a JSON logistic model (classes it never saw get 0)."""
    out = np.zeros((X.shape[0], n_classes), dtype=np.float64)
    if meta["model"] == "constant":
        out[:] = np.asarray(meta["probs"], dtype=np.float64)
        return out
    classes = meta["classes"]
    coef = np.asarray(meta["coef"], dtype=np.float64)
    intercept = np.asarray(meta["intercept"], dtype=np.float64)
    z = X @ coef.T + intercept
    if len(classes) == 2 and coef.shape[0] == 1:  # scikit-learn's binary form: one row for classes[1]
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        out[:, classes[0]], out[:, classes[1]] = 1.0 - p1, p1
        return out
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out[:, classes] = e / e.sum(axis=1, keepdims=True)
    return out


def _constant(y: np.ndarray, n_classes: int) -> dict[str, Any]:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return {"model": "constant", "probs": ((counts + 1.0) / (counts.sum() + n_classes)).tolist()}


def _fit_logistic(X: np.ndarray, y: np.ndarray, n_classes: int, C: float) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return _constant(y, n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=C, max_iter=2000)
        model.fit(X, y)
    return logistic_to_json(model)


def group_folds(groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train units, test units) for k folds over the distinct ``groups`` (examples), seeded."""
    ids = np.unique(groups)
    k = max(2, min(k, len(ids)))
    perm = np.random.default_rng(seed).permutation(ids)
    out = []
    for fold in np.array_split(perm, k):
        test = np.isin(groups, fold)
        out.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return out


def fit_logistic_cv(
    X: np.ndarray, y: np.ndarray, n_classes: int, groups: np.ndarray, inner_folds: int = 3, seed: int = 0
) -> dict[str, Any]:
    """L2 logistic regression with ``C`` chosen from ``C_GRID`` by inner k-fold held-out log loss (the smaller
    ``C``, i.e. the stronger regularisation, wins ties), refitted on all of ``X``."""
    from threadpoolctl import threadpool_limits

    y = np.asarray(y, dtype=np.int64)
    if len(np.unique(y)) < 2 or len(np.unique(groups)) < 2:
        return {**_constant(y, n_classes), "C": None}
    with threadpool_limits(limits=1):  # small fits: BLAS / OpenMP threads only contend (10x slower when busy)
        return _fit_logistic_cv(X, y, n_classes, groups, inner_folds, seed)


def _fit_logistic_cv(
    X: np.ndarray, y: np.ndarray, n_classes: int, groups: np.ndarray, inner_folds: int, seed: int
) -> dict[str, Any]:
    folds = group_folds(groups, inner_folds, seed)
    losses = []
    for C in C_GRID:
        total = 0.0
        for tr, te in folds:
            p = logistic_forward(X[te], _fit_logistic(X[tr], y[tr], n_classes, C), n_classes)
            total += float(-np.log(np.clip(p[np.arange(len(te)), y[te]], EPS, None)).sum())
        losses.append(total / len(y))
    best = C_GRID[int(np.argmin(losses))]
    return {**_fit_logistic(X, y, n_classes, best), "C": best}


# ------------------------------------------------------------------------------------------ ridge


def fit_ridge_cv(X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Ridge regression, ``alpha`` from ``ALPHA_GRID`` by efficient leave-one-out (scikit-learn RidgeCV)."""
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=ALPHA_GRID).fit(X, y)
    return {
        "model": "ridge",
        "alpha": float(model.alpha_),
        "coef": np.asarray(model.coef_, dtype=np.float64).ravel().tolist(),
        "intercept": float(model.intercept_),
    }


def ridge_forward(X: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    return X @ np.asarray(meta["coef"], dtype=np.float64) + float(meta["intercept"])


# ------------------------------------------------------------------------------------------ the method


@dataclass(frozen=True)
class MetaLearner:
    """``fit(P, y, example, options) -> meta`` (JSON) on members' outputs ``[M, N, C]``; ``apply(P, meta) ->
    [N, C]``."""

    fit: Callable[[np.ndarray, np.ndarray, np.ndarray, TuningOptions], dict[str, Any]]
    apply: Callable[[np.ndarray, dict[str, Any]], np.ndarray]


LEARNERS: Registry[MetaLearner] = Registry("stacking meta-learner")


def _fit_multinomial(
    P: np.ndarray, y: np.ndarray, example: np.ndarray, options: TuningOptions
) -> dict[str, Any]:
    return fit_logistic_cv(stack_features(P), y, P.shape[2], example, options.inner_folds, options.seed)


def _apply_multinomial(P: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    return logistic_forward(stack_features(P), meta, P.shape[2])


def _fit_per_label(
    P: np.ndarray, y: np.ndarray, example: np.ndarray, options: TuningOptions
) -> dict[str, Any]:
    per_label = []
    for j in range(P.shape[2]):
        yj = y[:, j].astype(np.int64)
        per_label.append(fit_logistic_cv(P[:, :, j].T, yj, 2, example, options.inner_folds, options.seed))
    return {"model": "logistic_per_label", "labels": per_label}


def _apply_per_label(P: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    cols = [logistic_forward(P[:, :, j].T, lm, 2)[:, 1] for j, lm in enumerate(meta["labels"])]
    return np.stack(cols, axis=1)


def _fit_ridge(P: np.ndarray, y: np.ndarray, example: np.ndarray, options: TuningOptions) -> dict[str, Any]:
    return fit_ridge_cv(P[:, :, 0].T, y)


def _apply_ridge(P: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    return ridge_forward(P[:, :, 0].T, meta)[:, None]


LEARNERS.register("multinomial")(MetaLearner(_fit_multinomial, _apply_multinomial))
LEARNERS.register("per_label")(MetaLearner(_fit_per_label, _apply_per_label))
LEARNERS.register("ridge")(MetaLearner(_fit_ridge, _apply_ridge))


def fit_meta(ta: TaskArrays, options: TuningOptions) -> dict[str, Any]:
    """Fit the task's meta-learner on these units (a fold's complement, or the whole dev split)."""
    P = ta.P
    m, _, c = P.shape
    meta = LEARNERS.get(ta.type.stack_learner).fit(P, ta.y, ta.example, options)
    return {"meta": meta, "features": "probs", "n_members": m, "n_labels": c}


def apply_meta(P: np.ndarray, params: dict[str, Any], task_type: TaskType) -> np.ndarray:
    """The saved meta-learner's outputs ``[N, C]`` on members' outputs ``[M, N, C]``."""
    P = np.asarray(P, dtype=np.float64)
    if P.shape[0] != params["n_members"] or P.shape[2] != params["n_labels"]:
        raise MtfuseError(
            f"the meta-learner expects {params['n_members']} members x {params['n_labels']} outputs, "
            f"got {P.shape[0]} x {P.shape[2]}"
        )
    return LEARNERS.get(task_type.stack_learner).apply(P, params["meta"])


def regularisation(params: dict[str, Any]) -> Any:
    """The regularisation strength a fit chose (``C`` / ``alpha``; per label for multi-label): for reports."""
    meta = params["meta"]
    if meta["model"] == "ridge":
        return {"alpha": meta["alpha"]}
    if meta["model"] == "logistic_per_label":
        return {"C": [m.get("C") for m in meta["labels"]]}
    return {"C": meta.get("C")}
