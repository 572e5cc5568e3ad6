"""Metrics: hand-computed values on tiny arrays, the 0-100 scale, degenerate cases, GLUE aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from mtfuse.errors import ConfigError
from mtfuse.metrics import METRICS, aggregate, task_score


def test_registry_names() -> None:
    generation = ["bleu", "chrf", "rouge1", "rouge2", "rougeL", "distinct1", "distinct2", "gen_len"]
    assert METRICS.names() == sorted(
        [
            "accuracy",
            "f1",
            "matthews",
            "pearson",
            "spearman",
            "seqeval_f1",
            "micro_f1",
            "macro_f1",
            *generation,
            "srl_f1",
            "srl_precision",
            "srl_recall",
            "intent_accuracy",
            "slot_f1",
            "frame_accuracy",
            "exact_match",
            "squad_f1",
            "perplexity",
            "mlm_loss",
        ]
    )
    with pytest.raises(ConfigError, match="unknown metric 'meteor'"):
        METRICS.get("meteor")


def test_accuracy() -> None:
    assert METRICS.get("accuracy")([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(50.0)
    assert METRICS.get("accuracy")(np.array([2, 2]), np.array([2, 2])) == pytest.approx(100.0)


def test_binary_f1_of_class_one() -> None:
    # golds 1 1 0 0 1, preds 1 0 1 0 1: tp=2 fp=1 fn=1 -> P=R=2/3 -> F1=2/3
    assert METRICS.get("f1")([1, 0, 1, 0, 1], [1, 1, 0, 0, 1]) == pytest.approx(200 / 3)
    # no positive anywhere: 0, not an error or NaN
    assert METRICS.get("f1")([0, 0], [0, 0]) == 0.0


def test_matthews_hand_computed() -> None:
    # tp=2 tn=1 fp=1 fn=1: MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    preds = [1, 1, 1, 0, 0]
    golds = [1, 1, 0, 1, 0]
    assert METRICS.get("matthews")(preds, golds) == pytest.approx(100 / 6)
    assert METRICS.get("matthews")(golds, golds) == pytest.approx(100.0)
    assert METRICS.get("matthews")([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0  # constant predictions


def test_pearson_spearman() -> None:
    golds = [1.0, 2.0, 3.0, 4.0]
    assert METRICS.get("pearson")([2.0, 4.0, 6.0, 8.0], golds) == pytest.approx(100.0)
    assert METRICS.get("pearson")([4.0, 3.0, 2.0, 1.0], golds) == pytest.approx(-100.0)
    # monotone but not linear: Spearman 100, Pearson below
    preds = [1.0, 8.0, 27.0, 64.0]
    assert METRICS.get("spearman")(preds, golds) == pytest.approx(100.0)
    assert 0 < METRICS.get("pearson")(preds, golds) < 100.0
    # hand-computed Pearson: x = 1 2 3, y = 1 3 2 -> r = 0.5
    assert METRICS.get("pearson")([1.0, 3.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(50.0)


@pytest.mark.parametrize("name", ["pearson", "spearman"])
def test_correlation_of_constant_prediction_is_zero(name: str) -> None:
    fn = METRICS.get(name)
    assert fn([2.5, 2.5, 2.5], [1.0, 2.0, 3.0]) == 0.0
    assert fn([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0
    assert fn([1.0], [2.0]) == 0.0
    assert not math.isnan(fn([2.5, 2.5], [1.0, 2.0]))


def test_seqeval_entity_level() -> None:
    fn = METRICS.get("seqeval_f1")
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert fn(gold, gold) == pytest.approx(100.0)
    # PER span split into PER + ORG: the PER entity is wrong; LOC right -> P = 1/3, R = 1/2, F1 = 0.4
    pred = [["B-PER", "I-ORG", "O", "B-LOC"]]
    assert fn(pred, gold) == pytest.approx(40.0)
    # a span with a wrong boundary counts as wrong even though the first token matches
    assert fn([["B-PER", "O", "O", "O"]], [["B-PER", "I-PER", "O", "O"]]) == 0.0
    # no entity anywhere: 0, not NaN
    assert fn([["O", "O"]], [["O", "O"]]) == 0.0
    with pytest.raises(ValueError):
        fn([["O"]], [["O", "O"]])


def test_multilabel_micro_macro_match_sklearn() -> None:
    golds = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
    preds = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    micro = METRICS.get("micro_f1")(preds, golds)
    macro = METRICS.get("macro_f1")(preds, golds)
    assert micro == pytest.approx(100 * f1_score(golds, preds, average="micro"))
    assert macro == pytest.approx(100 * f1_score(golds, preds, average="macro", zero_division=0))
    # by hand: tp=4 fp=1 fn=2 -> micro F1 = 8/11; per-label F1 = 1, 2/3, 1/2, 0 (empty label) -> 13/24
    assert micro == pytest.approx(800 / 11)
    assert macro == pytest.approx(1300 / 24)


def test_multilabel_with_one_label_scores_that_label() -> None:
    # An [n, 1] indicator matrix is one label, not a binary target with two classes (issue 8 section 7):
    # the label is never predicted, so its F1 is 0 (scikit-learn's binary reading gave 83.33 / 45.45).
    golds = np.array([[0], [0], [0], [0], [1], [0]])
    preds = np.zeros_like(golds)
    assert METRICS.get("micro_f1")(preds, golds) == 0.0
    assert METRICS.get("macro_f1")(preds, golds) == 0.0
    # one hit, one false alarm: tp=1 fp=1 fn=0 -> F1 = 2/3
    preds = np.array([[0], [1], [0], [0], [1], [0]])
    assert METRICS.get("micro_f1")(preds, golds) == pytest.approx(200 / 3)
    assert METRICS.get("macro_f1")(preds, golds) == pytest.approx(200 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_multilabel_matches_sklearn_on_random_matrices(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    golds = rng.integers(0, 2, size=(20, k))
    preds = rng.integers(0, 2, size=(20, k))
    for avg in ("micro", "macro"):
        want = 100 * f1_score(golds, preds, average=avg, zero_division=0)
        assert METRICS.get(f"{avg}_f1")(preds, golds) == pytest.approx(want)


def test_multilabel_needs_a_matrix() -> None:
    with pytest.raises(ValueError, match="num_labels"):
        METRICS.get("micro_f1")([0, 1], [0, 1])


@pytest.mark.parametrize("name", ["accuracy", "f1", "matthews", "micro_f1", "macro_f1"])
def test_scale_is_0_to_100(name: str) -> None:
    rng = np.random.default_rng(0)
    shape = (50, 3) if name.endswith("_f1") and name != "f1" else (50,)
    golds = rng.integers(0, 2, size=shape)
    preds = rng.integers(0, 2, size=shape)
    fn = METRICS.get(name)
    assert -100.0 <= fn(preds, golds) <= 100.0
    assert fn(golds, golds) == pytest.approx(100.0)
    assert isinstance(fn(preds, golds), float)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        METRICS.get("accuracy")([1, 0], [1, 0, 1])


def test_task_score_and_aggregate() -> None:
    mrpc = {"f1": 90.0, "accuracy": 86.0}
    stsb = {"pearson": 88.0, "spearman": 87.0}
    cola = {"matthews": 55.0}
    assert task_score(mrpc) == pytest.approx(88.0)
    assert aggregate({"mrpc": mrpc, "stsb": stsb, "cola": cola}) == pytest.approx((88.0 + 87.5 + 55.0) / 3)
    # each task weighs the same whatever its number of metrics
    assert aggregate({"a": {"f1": 80.0, "accuracy": 60.0}, "b": {"accuracy": 100.0}}) == pytest.approx(85.0)
    with pytest.raises(ValueError):
        task_score({})
    with pytest.raises(ValueError):
        aggregate({})
