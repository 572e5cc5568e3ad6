"""Ensemble combiners: pure functions over members' outputs (means, tuned weights, votes, Caruana)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from mtfuse.fusion.ensemble import combiners as C
from tests.helpers.fusion import TT, noisy_members


def test_mean_and_weighted_mean() -> None:
    P = np.array([[[0.2, 0.8], [0.6, 0.4]], [[0.4, 0.6], [1.0, 0.0]]])
    assert C.mean_probs(P) == pytest.approx(np.array([[0.3, 0.7], [0.8, 0.2]]))
    assert C.weighted_mean(P, [1.0, 0.0]) == pytest.approx(P[0])
    assert C.weighted_mean(list(P), [0.25, 0.75]) == pytest.approx(0.25 * P[0] + 0.75 * P[1])
    assert C.mean_probs([np.array([1.0, 3.0]), np.array([3.0, 5.0])])[:, 0] == pytest.approx([2.0, 4.0])
    for bad in ([0.5, 0.6], [1.5, -0.5], [1.0]):
        with pytest.raises(ValueError, match="non-negative numbers summing to 1"):
            C.weighted_mean(P, bad)


@pytest.mark.parametrize("kind", ["categorical", "multilabel", "regression"])
def test_nll_gradient_matches_finite_differences(kind: str) -> None:
    rng = np.random.default_rng(1)
    if kind == "regression":
        P, y = rng.normal(size=(3, 20, 1)), rng.normal(size=20)
    elif kind == "multilabel":
        P, y = rng.uniform(0.05, 0.95, (3, 20, 4)), (rng.random((20, 4)) < 0.5).astype(float)
    else:
        P, y = rng.dirichlet(np.ones(3), size=(3, 20)), rng.integers(0, 3, 20)
    w = np.array([0.2, 0.5, 0.3])
    loss, grad = C._nll_and_grad(P, y, TT[kind], w)
    assert loss == pytest.approx(C.nll(C.weighted_mean(P, w), y, TT[kind]))
    num = approx_fprime(w, lambda v: C._nll_and_grad(P, y, TT[kind], v)[0], 1e-7)
    assert grad == pytest.approx(num, rel=1e-4, abs=1e-5)


def test_tune_weights_nll_on_the_simplex_and_prefers_the_good_member() -> None:
    P, y = noisy_members()
    cat = TT["categorical"]
    w = C.tune_weights_nll(P, y, cat)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] == max(w)
    assert C.nll(C.weighted_mean(P, w), y, cat) <= C.nll(C.mean_probs(P), y, cat)
    assert C.tune_weights_nll(P[:1], y, cat) == pytest.approx([1.0])


def test_tune_weights_nll_regression_and_multilabel() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=200)
    P = np.stack([y + rng.normal(0, 0.1, 200), y + rng.normal(0, 2.0, 200)])[:, :, None]
    w = C.tune_weights_nll(P, y, TT["regression"])
    assert w[0] > 0.9
    yl = (rng.random((200, 3)) < 0.5).astype(float)
    good = np.clip(yl * 0.8 + 0.1, 0, 1)
    Pm = np.stack([good, rng.uniform(0, 1, (200, 3))])
    assert C.tune_weights_nll(Pm, yl, TT["multilabel"])[0] > 0.8


def test_tune_weights_metric_random_search_keeps_uniform_on_ties() -> None:
    P, y = noisy_members()
    w = C.tune_weights_metric(P, lambda out: float((out.argmax(1) == y).mean()), n_samples=32, seed=0)
    acc = float((C.weighted_mean(P, w).argmax(1) == y).mean())
    assert acc >= float((C.mean_probs(P).argmax(1) == y).mean())
    assert acc >= float((P[0].argmax(1) == y).mean())
    const = C.tune_weights_metric(P, lambda out: 1.0)  # every candidate ties: uniform wins
    assert const == pytest.approx(np.full(3, 1 / 3))
    cands = C.simplex_candidates(3, 10, seed=5)
    assert cands.shape == (14, 3) and cands.sum(1) == pytest.approx(np.ones(14)) and (cands >= 0).all()
    assert C.simplex_candidates(3, 10, seed=5) == pytest.approx(cands)  # seeded


def test_majority_vote_and_soft_vote() -> None:
    a, b, c = [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]
    P = np.array([[a, a], [b, c], [c, c]])  # example 0: votes 0,0,1; example 1: votes 0,1,1
    out = C.majority_vote(P)
    assert out.argmax(1).tolist() == [0, 1]
    assert out.sum(1) == pytest.approx([1.0, 1.0])
    # a 1-1 tie is broken by the mean probability
    tie = np.array([[[0.55, 0.45]], [[0.1, 0.9]]])
    assert C.majority_vote(tie).argmax(1).tolist() == [1]
    # majority beats a confident minority (soft vote follows the confident member)
    P2 = np.array([[[0.45, 0.55]], [[0.45, 0.55]], [[0.99, 0.01]]])
    assert C.majority_vote(P2).argmax(1).tolist() == [1]
    assert C.soft_vote(P2).tolist() == [0]
    assert C.soft_vote(P2, [0.5, 0.5, 0.0]).tolist() == [1]
    # multi-label: per label majority
    Pm = np.array([[[0.9, 0.2]], [[0.8, 0.6]], [[0.1, 0.7]]])
    assert (C.majority_vote(Pm, TT["multilabel"].votes) >= 0.5).astype(int).tolist() == [[1, 1]]
    assert C.majority_vote(P, TT["categorical"].votes) == pytest.approx(out)


def test_caruana_selection_with_replacement() -> None:
    P, y = noisy_members(qualities=(0.95, 0.6, 0.55, 0.5))
    acc = lambda out: float((out.argmax(1) == y).mean())  # noqa: E731
    w, hist = C.caruana_selection(P, acc, n_iter=10, loss_fn=lambda out: C.nll(out, y, TT["categorical"]))
    assert w.sum() == pytest.approx(1.0) and w[0] == max(w)
    assert len(hist) == 10 and hist[0]["added"] == 0
    assert acc(C.weighted_mean(P, w)) >= max(acc(P[m]) for m in range(4))
    # with replacement: weights are multiples of 1/bag size, a member can be picked many times
    assert any(np.allclose(w * size, np.round(w * size)) for size in range(1, 11))
    one, _ = C.caruana_selection(P[:1], acc, n_iter=5)
    assert one == pytest.approx([1.0])


def test_bagged_caruana_selection_averages_selections_over_random_parts() -> None:
    P, y = noisy_members(qualities=(0.95, 0.6, 0.55, 0.5))
    acc = lambda out: float((out.argmax(1) == y).mean())  # noqa: E731
    w = C.bagged_caruana_selection(P, acc, n_iter=5, bags=20, fraction=0.5, seed=3)
    assert w.shape == (4,) and w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] == max(w) and 0.0 < w[0] < 1.0  # the best member wins the bags it is in, and only those
    assert np.array_equal(w, C.bagged_caruana_selection(P, acc, n_iter=5, bags=20, fraction=0.5, seed=3))
    # by hand: the same draws, one plain selection per bag over the drawn members, weights averaged
    rng, total = np.random.default_rng(3), np.zeros(4)
    for _ in range(20):
        drawn = np.flatnonzero(rng.random(4) < 0.5)
        drawn = drawn if drawn.size else np.array([int(rng.integers(4))])
        total[drawn] += C.caruana_selection(P[drawn], acc, n_iter=5)[0]
    assert w == pytest.approx(total / total.sum())
    # every member in every bag: the plain selection
    full = C.bagged_caruana_selection(P, acc, n_iter=5, bags=3, fraction=1.0)
    assert full == pytest.approx(C.caruana_selection(P, acc, n_iter=5)[0])


def test_caruana_sorted_initialisation_starts_from_the_best_top_n_bag() -> None:
    # three members, each right on a different 2 of 3 units (accuracy 2/3); any two tie 0.5 / 0.5 on two units
    # (argmax: label 0, wrong), so 1/3; all three are right everywhere: the sorted start takes all three
    y = np.array([1, 1, 1])
    right, wrong = [0.4, 0.6], [0.6, 0.4]
    P = np.array([[right, right, wrong], [right, wrong, right], [wrong, right, right]])
    acc = lambda out: float((out.argmax(1) == y).mean())  # noqa: E731
    w, hist = C.caruana_selection(P, acc, n_iter=3, sorted_init=True)
    assert hist[0] == {"size": 3, "added": [0, 1, 2], "score": 1.0}
    assert w == pytest.approx([1 / 3] * 3) and len(hist) == 1
    # the plain start: member 0 alone, then the greedy steps (the bag of the first best score is kept)
    plain, hist_plain = C.caruana_selection(P, acc, n_iter=3)
    assert hist_plain[0]["added"] == 0 and hist_plain[0]["size"] == 1
    assert acc(C.weighted_mean(P, plain)) == max(h["score"] for h in hist_plain)
    # one best member alone beats every larger equal-share start: sorted_init reduces to the plain start
    Q, yq = noisy_members(qualities=(0.95, 0.6, 0.55, 0.5))
    accq = lambda out: float((out.argmax(1) == yq).mean())  # noqa: E731
    tops = [accq(Q[np.argsort([-accq(q) for q in Q], kind="stable")[:n]].mean(0)) for n in range(1, 5)]
    n0 = int(np.argmax(tops)) + 1
    ws, hs = C.caruana_selection(Q, accq, n_iter=6, sorted_init=True)
    assert hs[0]["size"] == n0 and hs[0]["score"] == pytest.approx(max(tops))
    if n0 == 1:
        assert ws == pytest.approx(C.caruana_selection(Q, accq, n_iter=6)[0])
