"""Stacking: the meta-learner's JSON forward pass, inner-CV regularisation, out-of-fold scores, prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble import methods as M
from mtfuse.fusion.ensemble import stack as S
from mtfuse.fusion.ensemble.output import ensemble_command
from mtfuse.fusion.ensemble.predictor import EnsemblePredictor
from mtfuse.fusion.ensemble.protocol import fuse_task
from mtfuse.tasks.types import TASK_TYPES
from tests.helpers.fusion import make_ta, no_partial_output, noisy_members


def separable(n: int = 60, n_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Member 0 always puts 0.6 on the gold class (perfectly separable); member 1 is noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    good = np.full((n, n_classes), 0.4 / (n_classes - 1))
    good[np.arange(n), y] = 0.6
    return np.stack([good, rng.dirichlet(np.ones(n_classes), n)]), y


@pytest.mark.parametrize("n_classes", [2, 4])
def test_logistic_json_forward_pass_matches_scikit_learn(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    X, y = rng.normal(size=(80, 5)), rng.integers(0, n_classes, 80)
    model = LogisticRegression(C=0.7, max_iter=1000).fit(X, y)
    meta = json.loads(json.dumps(S.logistic_to_json(model)))  # survives JSON
    assert S.logistic_forward(X, meta, n_classes) == pytest.approx(model.predict_proba(X), abs=1e-10)


def test_logistic_forward_fills_classes_a_fold_never_saw() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40) * 2  # classes 0 and 2 of 3
    meta = S.logistic_to_json(LogisticRegression().fit(X, y))
    p = S.logistic_forward(X, meta, 3)
    assert p[:, 1] == pytest.approx(0) and p.sum(1) == pytest.approx(1)
    const = S.fit_logistic_cv(X, np.zeros(40, dtype=np.int64), 3, np.arange(40))
    assert const["model"] == "constant" and S.logistic_forward(X, const, 3)[:, 0] == pytest.approx(
        2 / 43 * 20.5
    )


def test_inner_cross_validation_picks_the_regularisation() -> None:
    P, y = noisy_members(n=200)
    X = S.stack_features(P)
    meta = S.fit_logistic_cv(X, y, 2, np.arange(200), inner_folds=3, seed=0)
    assert meta["C"] in S.C_GRID and meta["model"] == "logistic"
    noise = S.fit_logistic_cv(np.random.default_rng(1).normal(size=(200, 2)), y, 2, np.arange(200))
    assert noise["C"] == min(S.C_GRID)  # pure noise: the strongest regularisation wins


@pytest.mark.parametrize("n_classes", [2, 3])
def test_stacking_on_perfectly_separable_members_is_perfect(n_classes: int) -> None:
    P, y = separable(n_classes=n_classes)
    f = fuse_task(make_ta(P, y), "stack", 5, M.TuningOptions(seed=0))
    assert f.metrics["accuracy"] == 100.0  # out-of-fold
    assert len(f.fold_params) == 5 and f.params["meta"]["model"] == "logistic"


def test_stacking_token_multilabel_and_regression() -> None:
    rng = np.random.default_rng(3)
    # token task: 30 sentences, member 0 separable per word
    lengths = rng.integers(2, 6, 30)
    example = np.repeat(np.arange(30), lengths)
    labels = ["O", "B-PER", "I-PER"]
    yt = np.where(np.arange(len(example)) % 3 == 0, 1, 0)
    yt[1:][yt[:-1] == 1] = 2
    good = np.full((len(example), 3), 0.2)
    good[np.arange(len(example)), yt] = 0.6
    P = np.stack([good, rng.dirichlet(np.ones(3), len(example))])
    f = fuse_task(make_ta(P, yt, "token", example, ("seqeval_f1",), labels), "stack", 5, M.TuningOptions())
    assert f.metrics["seqeval_f1"] == 100.0
    # multi-label: one binary meta-learner per label
    ym = (rng.random((60, 3)) < 0.5).astype(float)
    Pm = np.stack([0.3 + 0.4 * ym, rng.random((60, 3))])
    f = fuse_task(make_ta(Pm, ym, "multilabel", metrics=("micro_f1",)), "stack", 5, M.TuningOptions())
    assert f.metrics["micro_f1"] == 100.0 and len(f.params["meta"]["labels"]) == 3
    # regression: ridge recovers a linear combination of the members
    a, b = rng.normal(size=80), rng.normal(size=80)
    yr = 0.3 * a + 0.7 * b + 1.0
    f = fuse_task(
        make_ta(np.stack([a, b])[:, :, None], yr, "regression", metrics=("pearson",)),
        "stack",
        5,
        M.TuningOptions(),
    )
    assert f.metrics["pearson"] > 99.9
    assert f.params["meta"]["coef"] == pytest.approx([0.3, 0.7], abs=0.01)
    assert f.params["meta"]["intercept"] == pytest.approx(1.0, abs=0.01)
    assert S.regularisation(f.params)["alpha"] in S.ALPHA_GRID


def test_apply_meta_checks_the_member_count() -> None:
    P, y = separable()
    params = S.fit_meta(make_ta(P, y), M.TuningOptions())
    with pytest.raises(MtfuseError, match="expects 2 members x 3 outputs, got 1 x 3"):
        S.apply_meta(P[:1], params, TASK_TYPES.get("classification"))


def test_pooled_features_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MtfuseError, match="not available: run directories store the members' predictions"):
        ensemble_command([tmp_path], tmp_path / "out", method="stack", features="probs+pooled")
    with pytest.raises(MtfuseError, match="applies to --method stack only"):
        ensemble_command([tmp_path], tmp_path / "out", method="mean", features="probs+pooled")
    with pytest.raises(
        MtfuseError, match=r"unknown --features 'logits'; choose from \[probs, probs\+pooled\]"
    ):
        ensemble_command([tmp_path], tmp_path / "out", method="stack", features="logits")
    no_partial_output(tmp_path / "out")


def test_stack_of_real_runs_predicts_through_members_and_meta_learner(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    from mtfuse.predict import Predictor

    out = tmp_path / "stack"
    fusion = ensemble_command(
        [runs["mt1"], runs["mt2"]], out, tasks=["sst2", "stsb"], method="stack", folds=3
    )
    assert set(fusion.tasks) == {"sst2", "stsb"}
    assert not [p for p in out.rglob("*") if p.suffix in {".pkl", ".pickle", ".joblib", ".bin", ".pt"}]
    spec = json.loads((out / "ensemble.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert spec["kind"] == results["kind"] == "stack"
    assert (
        spec["protocol"]["reported"] == "out-of-fold"
        and len(spec["tasks"]["sst2"]["fold_regularisation"]) == 3
    )
    assert spec["tasks"]["sst2"]["params"]["meta"]["model"] in ("logistic", "constant")
    assert spec["tasks"]["stsb"]["params"]["meta"]["model"] == "ridge"
    rows = [{"sentence": "a gripping , funny film ."}, {"sentence": "dull and flat"}]
    got = EnsemblePredictor(out).predict_rows("sst2", rows)
    member = [Predictor(r).predict_rows("sst2", rows) for r in (runs["mt1"], runs["mt2"])]
    labels = spec["tasks"]["sst2"]["labels"]
    P = np.array([[[r["probs"][lab] for lab in labels] for r in m] for m in member])
    expect = S.apply_meta(P, spec["tasks"]["sst2"]["params"], TASK_TYPES.get("classification"))
    for r, e in zip(got, expect, strict=True):
        assert [r["probs"][lab] for lab in labels] == pytest.approx(e, abs=2e-6)
