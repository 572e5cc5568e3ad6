"""Combiners: pure functions over members' outputs, stacked as ``P`` ``[M, N, C]`` (M members, N units, C
labels; a list of ``[N, C]`` arrays works too), returning fused outputs ``[N, C]`` (or weights):

* :func:`mean_probs`, :func:`weighted_mean` (weights on the simplex);
* :func:`tune_weights_nll`: weights minimising the negative log-likelihood of the task type
  (``TaskType.fused_nll``: classification / token: log loss; multi-label: binary cross-entropy; regression:
  squared error, the Gaussian NLL up to constants), solved with SLSQP under ``w >= 0, sum(w) = 1``;
* :func:`tune_weights_metric`: weights maximising the task metric, by seeded random search over the simplex
  (uniform weights, every single member, then Dirichlet(1) draws; the first best wins, so uniform wins ties);
* :func:`majority_vote` (hard vote of the members' ``TaskType.votes``, ties broken by the mean probability)
  and :func:`soft_vote` (the argmax of the mean probability, scikit-learn's ``voting='soft'``);
* :func:`caruana_selection`: greedy forward selection with replacement (Caruana, Niculescu-Mizil, Crew &
  Ksikes, "Ensemble Selection from Libraries of Models", ICML 2004), initialised with the best single member,
  keeping the best bag seen (or, with ``sorted_init``, with the best equal-share bag of the top members, the
  paper's sorted initialisation); the task metric decides, the NLL breaks ties;
* :func:`bagged_caruana_selection`: the same paper's bagged ensemble selection, the mean of the weights of
  ``bags`` selections, each over a seeded random part of the members (less prone to overfit the dev split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize

from mtfuse.tasks.types import TaskType

ScoreFn = Callable[[np.ndarray], float]
LossFn = Callable[[np.ndarray], float]


def as_stack(P: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Members' outputs as one float array ``[M, N, C]`` (``[M, N]`` regression values get ``C = 1``)."""
    arr = np.asarray(P, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected members' outputs of shape [M, N, C], got {arr.shape}")
    return arr


def uniform(m: int) -> np.ndarray:
    return np.full(m, 1.0 / m)


def check_simplex(w: np.ndarray | Sequence[float], m: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (m,) or np.any(w < -1e-9) or not np.isclose(w.sum(), 1.0, atol=1e-6):
        raise ValueError(f"weights must be {m} non-negative numbers summing to 1, got {w.tolist()}")
    return np.clip(w, 0.0, None) / np.clip(w, 0.0, None).sum()


def mean_probs(P: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """The plain mean of the members' outputs: ``[N, C]``."""
    return as_stack(P).mean(axis=0)


def weighted_mean(P: np.ndarray | Sequence[np.ndarray], w: np.ndarray | Sequence[float]) -> np.ndarray:
    """``sum_m w_m P_m`` with ``w`` on the simplex: ``[N, C]``."""
    arr = as_stack(P)
    return np.tensordot(check_simplex(w, arr.shape[0]), arr, axes=1)


def nll(out: np.ndarray, y: np.ndarray, task_type: TaskType) -> float:
    """Mean negative log-likelihood of fused outputs against the targets (``TaskType.fused_nll``)."""
    return task_type.fused_nll(np.asarray(out, dtype=np.float64), y)


def _nll_and_grad(
    P: np.ndarray, y: np.ndarray, task_type: TaskType, w: np.ndarray
) -> tuple[float, np.ndarray]:
    """NLL of ``weighted_mean(P, w)`` and its gradient with respect to ``w``."""
    return task_type.fused_nll_grad(P, y, w)


def tune_weights_nll(
    P: np.ndarray | Sequence[np.ndarray], y: np.ndarray, task_type: TaskType, max_iter: int = 200
) -> np.ndarray:
    """Simplex weights minimising the NLL of the weighted mean (SLSQP from uniform; never worse than uniform
    on the data it is tuned on)."""
    arr = as_stack(P)
    m = arr.shape[0]
    w0 = uniform(m)
    if m == 1:
        return w0
    y = np.asarray(y)
    res = minimize(
        lambda w: _nll_and_grad(arr, y, task_type, w),
        w0,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"maxiter": max_iter, "ftol": 1e-10},
    )
    w = np.clip(np.asarray(res.x, dtype=np.float64), 0.0, None)
    w = w / w.sum() if w.sum() > 0 else w0
    if _nll_and_grad(arr, y, task_type, w)[0] > _nll_and_grad(arr, y, task_type, w0)[0]:
        return w0
    return w


def simplex_candidates(m: int, n_samples: int, seed: int) -> np.ndarray:
    """Uniform weights, each single member, then ``n_samples`` seeded Dirichlet(1) draws: ``[K, m]``."""
    rng = np.random.default_rng(seed)
    rows = [uniform(m), *np.eye(m)]
    if m > 1 and n_samples > 0:
        rows.extend(rng.dirichlet(np.ones(m), size=n_samples))
    return np.asarray(rows)


def tune_weights_metric(
    P: np.ndarray | Sequence[np.ndarray], score_fn: ScoreFn, n_samples: int = 64, seed: int = 0
) -> np.ndarray:
    """Simplex weights maximising ``score_fn(weighted_mean(P, w))`` (higher is better) by random search; the
    first best candidate wins, so uniform weights win ties."""
    arr = as_stack(P)
    cands = simplex_candidates(arr.shape[0], n_samples, seed)
    scores = [score_fn(np.tensordot(w, arr, axes=1)) for w in cands]
    return cands[int(np.argmax(scores))]


def _argmax_votes(out: np.ndarray) -> np.ndarray:
    v = np.zeros_like(out)
    v[np.arange(out.shape[0]), out.argmax(axis=1)] = 1.0
    return v


def majority_vote(
    P: np.ndarray | Sequence[np.ndarray], votes: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Hard vote, as a distribution ``(votes + mean probability) / (M + 1)``: its argmax (or, multi-label, its
    0.5 threshold) is the majority decision, ties broken by the mean probability.

    ``votes(out) -> [N, C]``: one member's votes (``TaskType.votes``; default: 1 for its argmax)."""
    arr = as_stack(P)
    m = arr.shape[0]
    mean = arr.mean(axis=0)
    vote = votes or _argmax_votes
    counts = np.zeros_like(mean)
    for k in range(m):
        counts += vote(arr[k])
    return (counts + mean) / (m + 1)


def soft_vote(
    P: np.ndarray | Sequence[np.ndarray], w: np.ndarray | Sequence[float] | None = None
) -> np.ndarray:
    """Class decisions ``[N]``: the argmax of the (weighted) mean probability."""
    arr = as_stack(P)
    out = mean_probs(arr) if w is None else weighted_mean(arr, w)
    return out.argmax(axis=1)


def caruana_selection(
    P: np.ndarray | Sequence[np.ndarray],
    score_fn: ScoreFn,
    n_iter: int = 25,
    loss_fn: LossFn | None = None,
    sorted_init: bool = False,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Greedy ensemble selection with replacement (Caruana et al., 2004).

    Start from the best single member (``sorted_init``: from the paper's sorted initialisation, section 2.1,
    the ``n`` best members in equal shares, ``n`` the best-scoring such start); at each step add (again,
    possibly) the member whose addition gives the best ``score_fn`` of the bag's mean (``loss_fn``, lower is
    better, breaks ties); keep the best bag seen. Returns the weights (each member's share of the bag) and
    the hill-climbing history."""
    arr = as_stack(P)
    m = arr.shape[0]

    def key(out: np.ndarray) -> tuple[float, float]:
        return (float(score_fn(out)), -float(loss_fn(out)) if loss_fn is not None else 0.0)

    keys = [key(arr[k]) for k in range(m)]
    order = sorted(range(m), key=lambda k: keys[k], reverse=True)  # stable: the first of equals first
    n0, best_key = 1, keys[order[0]]
    if sorted_init:
        starts = [key(arr[order[:n]].mean(axis=0)) for n in range(1, m + 1)]
        n0 = max(range(m), key=lambda i: starts[i]) + 1  # the smallest of equally good starts
        best_key = starts[n0 - 1]
    counts = np.zeros(m, dtype=np.int64)
    counts[order[:n0]] = 1
    total = arr[order[:n0]].sum(axis=0)
    best_counts = counts.copy()
    history: list[dict[str, Any]] = [
        {"size": n0, "added": order[0] if n0 == 1 else order[:n0], "score": best_key[0]}
    ]
    for size in range(n0 + 1, max(n_iter, n0) + 1):
        cand = [key((total + arr[k]) / size) for k in range(m)]
        pick = max(range(m), key=lambda k: cand[k])
        counts[pick] += 1
        total += arr[pick]
        history.append({"size": size, "added": pick, "score": cand[pick][0]})
        if cand[pick] > best_key:
            best_counts, best_key = counts.copy(), cand[pick]
    return best_counts / best_counts.sum(), history


def bagged_caruana_selection(
    P: np.ndarray | Sequence[np.ndarray],
    score_fn: ScoreFn,
    n_iter: int = 25,
    loss_fn: LossFn | None = None,
    bags: int = 20,
    fraction: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Bagged ensemble selection (Caruana et al. 2004, section 2.3): ``bags`` times, draw each member with
    probability ``fraction`` (at least one), run :func:`caruana_selection` over the drawn members only, and
    average the bags' weights. A member that one hill climb over-rates on the tuning split is left out of
    about ``1 - fraction`` of the bags, which damps the selection's overfitting."""
    arr = as_stack(P)
    m = arr.shape[0]
    rng = np.random.default_rng(seed)
    total = np.zeros(m, dtype=np.float64)
    for _ in range(max(bags, 1)):
        drawn = np.flatnonzero(rng.random(m) < fraction)
        if drawn.size == 0:
            drawn = np.array([int(rng.integers(m))])
        w, _ = caruana_selection(arr[drawn], score_fn, n_iter, loss_fn)
        total[drawn] += w
    return total / total.sum()
