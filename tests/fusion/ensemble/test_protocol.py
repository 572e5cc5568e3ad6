"""The out-of-fold protocol: folds, tuning never on the scored fold, fallbacks, and its warnings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble import combiners as C
from mtfuse.fusion.ensemble import methods as M
from mtfuse.fusion.ensemble import protocol as PR
from mtfuse.fusion.ensemble.members import TaskArrays
from tests.helpers.fusion import TT, make_ta, noisy_members


def test_kfold_split_partitions_the_examples() -> None:
    folds = PR.kfold_split(23, 5, seed=3)
    assert len(folds) == 5 and sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert all(3 <= len(f) <= 5 for f in folds)
    assert [f.tolist() for f in PR.kfold_split(23, 5, seed=3)] == [f.tolist() for f in folds]


def test_kfold_oof_never_tunes_on_the_scored_fold() -> None:
    """Each fold's parameters come from the other folds' examples only; token sentences stay whole."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 5, 20)
    example = np.repeat(np.arange(20), lengths)
    P = rng.dirichlet(np.ones(3), size=(2, len(example)))
    ta = make_ta(P, rng.integers(0, 3, len(example)), "token", example, ("seqeval_f1",), ["O", "B-X", "I-X"])
    seen: list[set[int]] = []

    def fit(sub: TaskArrays, o: M.TuningOptions) -> dict[str, Any]:
        seen.append(set(sub.example.tolist()))
        return {"weights": [1.0, 0.0], "examples": sorted(seen[-1])}

    method = M.EnsembleMethod("spy", True, fit, M._apply_weights, "test")
    out, fold_params, final = PR.kfold_oof(ta, method, 4, M.TuningOptions(seed=7))
    folds = PR.kfold_split(20, 4, seed=7)
    for fold, used in zip(folds, seen[:4], strict=True):
        assert used.isdisjoint(fold.tolist()) and used | set(fold.tolist()) == set(range(20))
    assert seen[4] == set(range(20))  # the saved parameters: tuned on all of dev
    assert out == pytest.approx(P[0])


@pytest.mark.parametrize("method", ["weighted_nll", "weighted_metric", "caruana", "caruana_bagged"])
def test_tuned_weights_not_worse_than_uniform_out_of_fold(method: str) -> None:
    """On a fixed seed, tuning never costs more than noise out-of-fold (and here it helps)."""
    P, y = noisy_members(n=400, qualities=(0.85, 0.55, 0.5), seed=4)
    ta = make_ta(P, y)
    tuned = PR.fuse_task(ta, method, 5, M.TuningOptions(seed=0))
    uniform = PR.fuse_task(ta, "mean", 5, M.TuningOptions(seed=0))
    assert tuned.metrics["accuracy"] >= uniform.metrics["accuracy"] - 1.0
    if method == "weighted_nll":
        assert C.nll(tuned.out, y, TT["categorical"]) <= C.nll(uniform.out, y, TT["categorical"]) + 0.01
    assert len(tuned.fold_params) == 5


def test_vote_on_regression_falls_back_to_the_mean() -> None:
    P = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 2.0]])[:, :, None]
    ta = make_ta(P, np.array([2.0, 2.0, 2.5]), "regression", metrics=("pearson",))
    f = PR.fuse_task(ta, "vote", 5, M.TuningOptions())
    assert f.method == "mean" and "regression" in (f.note or "")
    assert f.out[:, 0] == pytest.approx([2.0, 2.0, 2.5])


def test_too_small_dev_split_for_k_folds() -> None:
    with pytest.raises(MtfuseError, match=r"task 'sst2'.*9 examples.*5-fold.*at least 10"):
        PR.check_folds("sst2", 9, 5)
    with pytest.raises(MtfuseError, match="at least 2"):
        PR.check_folds("sst2", 100, 1)
    PR.check_folds("sst2", 10, 5)
