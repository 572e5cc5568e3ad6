"""Output-level ensembles: the pure functions, the k-fold protocol, member checks, the output directory,
prediction through members, and member diversity.

Pure functions run on synthetic arrays; directory-level tests use hand-written run directories (heads.json +
metrics.json + predictions, no model) or tiny real runs trained once per session (``trained_runs``, shared
with test_stack.py and test_compare.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from mtfuse.errors import MtfuseError
from mtfuse.fusion import ensemble as E
from mtfuse.fusion.diversity import diversity_command, pairwise
from mtfuse.fusion.members import TaskArrays, load_all, load_member
from mtfuse.tasks.types import TASK_TYPES

# ---------------------------------------------------------------------------------------- helpers

SMALL_CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"},
     metrics: [accuracy]}
  - {name: stsb, type: regression, data: {format: glue, task: STS-B, path: "{data_dir}/glue/STS-B"},
     metrics: [pearson, spearman]}
  - {name: conll, type: token_classification, data: {format: conll, path: "{data_dir}/conll2003"},
     metrics: [seqeval_f1]}
train: {batch_size: 8, lr: 1.0e-3, tensorboard: false}
"""

_TRAINED: dict[str, dict[str, Path]] = {}


def trained_runs(root: Path, tiny_model_dir: Path, shared_data_dir: Path) -> dict[str, Path]:
    """Three tiny real runs, trained once per session: two multi-task runs (sst2, stsb, conll; seeds 1, 2)
    and a single-task sst2 run (seed 3). Same dev subset, so they can be ensembled."""
    key = str(root)
    if key in _TRAINED:
        return _TRAINED[key]
    from mtfuse.cli import main

    root.mkdir(parents=True, exist_ok=True)
    (root / "mt.yaml").write_text(SMALL_CONFIG, encoding="utf-8")
    single = (
        SMALL_CONFIG.split("  - {name: stsb")[0] + "train: {batch_size: 8, lr: 1.0e-3, tensorboard: false}\n"
    )
    (root / "st.yaml").write_text(single, encoding="utf-8")
    common = [
        f"model.name_or_path={tiny_model_dir}",
        f"data_dir={shared_data_dir}",
        f"cache_dir={root / 'cache'}",
        "subset.train=16",
        "subset.eval=24",
        "train.max_steps=2",
        "train.progress=false",
    ]
    runs = {"mt1": ("mt.yaml", 1), "mt2": ("mt.yaml", 2), "st": ("st.yaml", 3)}
    out = {}
    for name, (cfg, seed) in runs.items():
        try:
            main(["train", str(root / cfg), "--output", str(root / name), *common, f"train.seed={seed}"])
        except SystemExit as e:
            assert not e.code, f"training {name} failed"
        out[name] = root / name
    _TRAINED[key] = out
    return out


@pytest.fixture(scope="session")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, shared_data_dir: Path
) -> dict[str, Path]:
    return trained_runs(tmp_path_factory.getbasetemp() / "fusion_runs", tiny_model_dir, shared_data_dir)


def fake_run(path: Path, tasks: dict[str, dict[str, Any]], params: int = 1000) -> Path:
    """A run directory without a model: heads.json, metrics.json, results.json and predictions.

    ``tasks[name]``: ``type``, ``labels`` (None for regression), ``metrics``, ``records`` (the rows)."""
    (path / "model").mkdir(parents=True)
    (path / "predictions").mkdir()
    heads = [{"task": n, "task_type": t["type"], "labels": t.get("labels")} for n, t in tasks.items()]
    (path / "model" / "heads.json").write_text(json.dumps({"format_version": 1, "heads": heads}))
    metrics = {
        "split": "dev",
        "tasks": {n: {m: 0.0 for m in t["metrics"]} for n, t in tasks.items()},
        "average": 0,
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    kind = "multi-task" if len(tasks) > 1 else "single-task"
    cost = {"parameters": params, "train_seconds": 2.0, "peak_memory_mb": 100.0}
    (path / "results.json").write_text(json.dumps({"kind": kind, "metrics": metrics, "cost": cost}))
    for n, t in tasks.items():
        with open(path / "predictions" / f"{n}.jsonl", "w", encoding="utf-8") as f:
            for r in t["records"]:
                f.write(json.dumps(r) + "\n")
    return path


def cls_records(p1: np.ndarray, gold: np.ndarray, labels: tuple[str, str] = ("neg", "pos")) -> list[dict]:
    return [
        {
            "index": i,
            "label": labels[int(p > 0.5)],
            "probs": {labels[0]: 1 - p, labels[1]: p},
            "gold": labels[g],
        }
        for i, (p, g) in enumerate(zip(p1.tolist(), gold.tolist(), strict=True))
    ]


def cls_task(p1: np.ndarray, gold: np.ndarray, labels: tuple[str, str] = ("neg", "pos")) -> dict[str, Any]:
    return {
        "type": "classification",
        "labels": list(labels),
        "metrics": ["accuracy"],
        "records": cls_records(p1, gold, labels),
    }


#: the task types behind the kinds of output the synthetic tests use
TT = {
    "categorical": TASK_TYPES.get("classification"),
    "multilabel": TASK_TYPES.get("multilabel"),
    "regression": TASK_TYPES.get("regression"),
    "token": TASK_TYPES.get("token_classification"),
}


def make_ta(
    P: np.ndarray,
    y: np.ndarray,
    kind: str = "categorical",
    example: np.ndarray | None = None,
    metrics: tuple[str, ...] = ("accuracy",),
    labels: list[str] | None = None,
) -> TaskArrays:
    """Synthetic TaskArrays (``example``: each unit's example; default one unit per example)."""
    P = np.asarray(P, dtype=np.float64)
    if example is None:
        example = np.arange(P.shape[1])
    n = int(example.max()) + 1 if len(example) else 0
    if labels is None and kind != "regression":
        labels = [f"l{j}" for j in range(P.shape[2])]
    return TaskArrays(
        "t",
        TT[kind],
        labels,
        list(metrics),
        [Path(f"m{i}") for i in range(P.shape[0])],
        P,
        np.asarray(y),
        np.asarray(example),
        n,
        [None] * n,
    )


def noisy_members(n: int = 300, qualities: tuple[float, ...] = (0.9, 0.6, 0.55), seed: int = 0):
    """Binary members of different quality: member m puts ``q_m``-ish mass on the gold label, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    P = []
    for q in qualities:
        conf = np.clip(rng.normal(q, 0.2, n), 0.01, 0.99)
        p_gold = np.where(rng.random(n) < q, conf, 1 - conf)
        p1 = np.where(y == 1, p_gold, 1 - p_gold)
        P.append(np.stack([1 - p1, p1], axis=1))
    return np.stack(P), y


def no_partial_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# ---------------------------------------------------------------------------------------- pure functions


def test_mean_and_weighted_mean() -> None:
    P = np.array([[[0.2, 0.8], [0.6, 0.4]], [[0.4, 0.6], [1.0, 0.0]]])
    assert E.mean_probs(P) == pytest.approx(np.array([[0.3, 0.7], [0.8, 0.2]]))
    assert E.weighted_mean(P, [1.0, 0.0]) == pytest.approx(P[0])
    assert E.weighted_mean(list(P), [0.25, 0.75]) == pytest.approx(0.25 * P[0] + 0.75 * P[1])
    assert E.mean_probs([np.array([1.0, 3.0]), np.array([3.0, 5.0])])[:, 0] == pytest.approx([2.0, 4.0])
    for bad in ([0.5, 0.6], [1.5, -0.5], [1.0]):
        with pytest.raises(ValueError, match="non-negative numbers summing to 1"):
            E.weighted_mean(P, bad)


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
    loss, grad = E._nll_and_grad(P, y, TT[kind], w)
    assert loss == pytest.approx(E.nll(E.weighted_mean(P, w), y, TT[kind]))
    num = approx_fprime(w, lambda v: E._nll_and_grad(P, y, TT[kind], v)[0], 1e-7)
    assert grad == pytest.approx(num, rel=1e-4, abs=1e-5)


def test_tune_weights_nll_on_the_simplex_and_prefers_the_good_member() -> None:
    P, y = noisy_members()
    cat = TT["categorical"]
    w = E.tune_weights_nll(P, y, cat)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] == max(w)
    assert E.nll(E.weighted_mean(P, w), y, cat) <= E.nll(E.mean_probs(P), y, cat)
    assert E.tune_weights_nll(P[:1], y, cat) == pytest.approx([1.0])


def test_tune_weights_nll_regression_and_multilabel() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=200)
    P = np.stack([y + rng.normal(0, 0.1, 200), y + rng.normal(0, 2.0, 200)])[:, :, None]
    w = E.tune_weights_nll(P, y, TT["regression"])
    assert w[0] > 0.9
    yl = (rng.random((200, 3)) < 0.5).astype(float)
    good = np.clip(yl * 0.8 + 0.1, 0, 1)
    Pm = np.stack([good, rng.uniform(0, 1, (200, 3))])
    assert E.tune_weights_nll(Pm, yl, TT["multilabel"])[0] > 0.8


def test_tune_weights_metric_random_search_keeps_uniform_on_ties() -> None:
    P, y = noisy_members()
    w = E.tune_weights_metric(P, lambda out: float((out.argmax(1) == y).mean()), n_samples=32, seed=0)
    acc = float((E.weighted_mean(P, w).argmax(1) == y).mean())
    assert acc >= float((E.mean_probs(P).argmax(1) == y).mean())
    assert acc >= float((P[0].argmax(1) == y).mean())
    const = E.tune_weights_metric(P, lambda out: 1.0)  # every candidate ties: uniform wins
    assert const == pytest.approx(np.full(3, 1 / 3))
    cands = E.simplex_candidates(3, 10, seed=5)
    assert cands.shape == (14, 3) and cands.sum(1) == pytest.approx(np.ones(14)) and (cands >= 0).all()
    assert E.simplex_candidates(3, 10, seed=5) == pytest.approx(cands)  # seeded


def test_majority_vote_and_soft_vote() -> None:
    a, b, c = [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]
    P = np.array([[a, a], [b, c], [c, c]])  # example 0: votes 0,0,1; example 1: votes 0,1,1
    out = E.majority_vote(P)
    assert out.argmax(1).tolist() == [0, 1]
    assert out.sum(1) == pytest.approx([1.0, 1.0])
    # a 1-1 tie is broken by the mean probability
    tie = np.array([[[0.55, 0.45]], [[0.1, 0.9]]])
    assert E.majority_vote(tie).argmax(1).tolist() == [1]
    # majority beats a confident minority (soft vote follows the confident member)
    P2 = np.array([[[0.45, 0.55]], [[0.45, 0.55]], [[0.99, 0.01]]])
    assert E.majority_vote(P2).argmax(1).tolist() == [1]
    assert E.soft_vote(P2).tolist() == [0]
    assert E.soft_vote(P2, [0.5, 0.5, 0.0]).tolist() == [1]
    # multi-label: per label majority
    Pm = np.array([[[0.9, 0.2]], [[0.8, 0.6]], [[0.1, 0.7]]])
    assert (E.majority_vote(Pm, TT["multilabel"].votes) >= 0.5).astype(int).tolist() == [[1, 1]]
    assert E.majority_vote(P, TT["categorical"].votes) == pytest.approx(out)


def test_caruana_selection_with_replacement() -> None:
    P, y = noisy_members(qualities=(0.95, 0.6, 0.55, 0.5))
    acc = lambda out: float((out.argmax(1) == y).mean())  # noqa: E731
    w, hist = E.caruana_selection(P, acc, n_iter=10, loss_fn=lambda out: E.nll(out, y, TT["categorical"]))
    assert w.sum() == pytest.approx(1.0) and w[0] == max(w)
    assert len(hist) == 10 and hist[0]["added"] == 0
    assert acc(E.weighted_mean(P, w)) >= max(acc(P[m]) for m in range(4))
    # with replacement: weights are multiples of 1/bag size, a member can be picked many times
    assert any(np.allclose(w * size, np.round(w * size)) for size in range(1, 11))
    one, _ = E.caruana_selection(P[:1], acc, n_iter=5)
    assert one == pytest.approx([1.0])


# ---------------------------------------------------------------------------------------- protocol


def test_kfold_split_partitions_the_examples() -> None:
    folds = E.kfold_split(23, 5, seed=3)
    assert len(folds) == 5 and sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert all(3 <= len(f) <= 5 for f in folds)
    assert [f.tolist() for f in E.kfold_split(23, 5, seed=3)] == [f.tolist() for f in folds]


def test_kfold_oof_never_tunes_on_the_scored_fold() -> None:
    """Each fold's parameters come from the other folds' examples only; token sentences stay whole."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 5, 20)
    example = np.repeat(np.arange(20), lengths)
    P = rng.dirichlet(np.ones(3), size=(2, len(example)))
    ta = make_ta(P, rng.integers(0, 3, len(example)), "token", example, ("seqeval_f1",), ["O", "B-X", "I-X"])
    seen: list[set[int]] = []

    def fit(sub: TaskArrays, o: E.Options) -> dict[str, Any]:
        seen.append(set(sub.example.tolist()))
        return {"weights": [1.0, 0.0], "examples": sorted(seen[-1])}

    method = E.Method("spy", True, fit, E._apply_weights, "test")
    out, fold_params, final = E.kfold_oof(ta, method, 4, E.Options(seed=7))
    folds = E.kfold_split(20, 4, seed=7)
    for fold, used in zip(folds, seen[:4], strict=True):
        assert used.isdisjoint(fold.tolist()) and used | set(fold.tolist()) == set(range(20))
    assert seen[4] == set(range(20))  # the saved parameters: tuned on all of dev
    assert out == pytest.approx(P[0])


@pytest.mark.parametrize("method", ["weighted_nll", "weighted_metric", "caruana"])
def test_tuned_weights_not_worse_than_uniform_out_of_fold(method: str) -> None:
    """On a fixed seed, tuning never costs more than noise out-of-fold (and here it helps)."""
    P, y = noisy_members(n=400, qualities=(0.85, 0.55, 0.5), seed=4)
    ta = make_ta(P, y)
    tuned = E.fuse_task(ta, method, 5, E.Options(seed=0))
    uniform = E.fuse_task(ta, "mean", 5, E.Options(seed=0))
    assert tuned.metrics["accuracy"] >= uniform.metrics["accuracy"] - 1.0
    if method == "weighted_nll":
        assert E.nll(tuned.out, y, TT["categorical"]) <= E.nll(uniform.out, y, TT["categorical"]) + 0.01
    assert len(tuned.fold_params) == 5


def test_vote_on_regression_falls_back_to_the_mean() -> None:
    P = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 2.0]])[:, :, None]
    ta = make_ta(P, np.array([2.0, 2.0, 2.5]), "regression", metrics=("pearson",))
    f = E.fuse_task(ta, "vote", 5, E.Options())
    assert f.method == "mean" and "regression" in (f.note or "")
    assert f.out[:, 0] == pytest.approx([2.0, 2.0, 2.5])


def test_too_small_dev_split_for_k_folds() -> None:
    with pytest.raises(MtfuseError, match=r"task 'sst2'.*9 examples.*5-fold.*at least 10"):
        E.check_folds("sst2", 9, 5)
    with pytest.raises(MtfuseError, match="at least 2"):
        E.check_folds("sst2", 100, 1)
    E.check_folds("sst2", 10, 5)


# ---------------------------------------------------------------------------------------- run dirs (fake)


def _two_fake_members(tmp_path: Path, n: int = 20) -> list[Path]:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, n)
    reg_gold = rng.normal(size=n)
    out = []
    for i in range(2):
        p1 = np.clip(np.where(gold == 1, 0.7, 0.3) + rng.normal(0, 0.25, n), 0.01, 0.99).round(4)
        reg = {
            "type": "regression",
            "labels": None,
            "metrics": ["pearson"],
            "records": [
                {"index": j, "score": float(reg_gold[j] + rng.normal()), "gold": float(reg_gold[j])}
                for j in range(n)
            ],
        }
        out.append(fake_run(tmp_path / f"m{i}", {"a": cls_task(p1, gold), "r": reg}))
    return out


def test_ensemble_of_fake_runs_writes_a_run_like_directory(tmp_path: Path) -> None:
    members = _two_fake_members(tmp_path)
    out = tmp_path / "ens"
    fusion = E.ensemble_command(members, out, method="weighted_nll", folds=4, seed=1)
    assert sorted(p.name for p in out.iterdir()) == [
        "diversity.json",
        "ensemble.json",
        "metrics.json",
        "predictions",
        "results.json",
    ]
    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["kind"] == "ensemble" and spec["method"] == "weighted_nll"
    assert spec["protocol"]["folds"] == 4 and spec["protocol"]["seed"] == 1
    assert "out-of-fold" in spec["protocol"]["text"] and spec["protocol"]["reported"] == "out-of-fold"
    assert [m["path"] for m in spec["members"]] == [str(m.resolve()) for m in members]
    for t in ("a", "r"):
        assert len(spec["tasks"][t]["weights"]) == 2 and sum(spec["tasks"][t]["weights"]) == pytest.approx(1)
        assert len(spec["tasks"][t]["fold_weights"]) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "dev" and set(metrics["tasks"]) == {"a", "r"}
    assert metrics["average"] == pytest.approx(
        np.mean([metrics["tasks"]["a"]["accuracy"], metrics["tasks"]["r"]["pearson"]])
    )
    assert metrics["tasks"] == {t: f.metrics for t, f in fusion.tasks.items()}
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "ensemble" and results["cost"]["parameters"] == 2000
    assert results["cost"]["train_seconds"] == pytest.approx(4.0)
    recs = [json.loads(line) for line in (out / "predictions" / "a.jsonl").read_text().splitlines()]
    assert len(recs) == 20 and set(recs[0]) == {"index", "label", "probs", "gold"}
    # the ensemble directory is itself a valid member (and its predictions are its out-of-fold outputs)
    m = load_member(out)
    assert m.kind == "ensemble" and set(m.tasks) == {"a", "r"}
    _, arrays = load_all([out])
    assert arrays["a"].score(arrays["a"].P[0])["accuracy"] == pytest.approx(metrics["tasks"]["a"]["accuracy"])


def test_existing_output_is_refused_and_replaced_only_with_overwrite(tmp_path: Path) -> None:
    members = _two_fake_members(tmp_path)
    out = tmp_path / "ens"
    E.ensemble_command(members, out)
    with pytest.raises(MtfuseError, match=r"ens: already exists; pass --overwrite"):
        E.ensemble_command(members, out, method="vote")
    assert json.loads((out / "ensemble.json").read_text())["method"] == "mean"
    E.ensemble_command(members, out, method="vote", overwrite=True)
    assert json.loads((out / "ensemble.json").read_text())["method"] == "vote"
    # never replaces what is not an ensemble, even with --overwrite
    with pytest.raises(MtfuseError, match="holds something other than an ensemble"):
        E.ensemble_command(members, members[0], overwrite=True)
    assert (members[0] / "model" / "heads.json").is_file()


# ---------------------------------------------------------------------------------------- bad input


def _bad(tmp_path: Path, members: list[Path], match: str, **kw: Any) -> None:
    out = tmp_path / "out_ens"
    with pytest.raises(MtfuseError, match=match):
        E.ensemble_command(members, out, **kw)
    no_partial_output(out)


def test_members_with_different_label_sets(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(20, 0.6), gold, ("neg", "positive"))})
    _bad(tmp_path, [a, b], r"task 't'.*different label sets.*/a.*\['neg', 'pos'\].*/b.*\['neg', 'positive'\]")


def test_members_with_the_same_labels_in_another_order_are_aligned(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.7), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(20, 0.3), 1 - gold, ("pos", "neg"))})
    _, arrays = load_all([a, b])
    assert arrays["t"].labels == ["neg", "pos"]
    assert arrays["t"].P[1] == pytest.approx(arrays["t"].P[0])


def test_missing_predictions(tmp_path: Path) -> None:
    members = _two_fake_members(tmp_path)
    (members[1] / "predictions" / "r.jsonl").unlink()
    _bad(tmp_path, members, r"m1: no dev predictions for task 'r' \(predictions/r.jsonl is missing")


def test_members_evaluated_with_mtfuse_evaluate(tmp_path: Path) -> None:
    """A merged model: no train predictions; `mtfuse evaluate` writes predictions/dev/, metrics-dev.json."""
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.where(gold == 1, 0.9, 0.1), gold)})
    (b / "predictions" / "dev").mkdir()
    (b / "predictions" / "t.jsonl").rename(b / "predictions" / "dev" / "t.jsonl")
    (b / "metrics.json").rename(b / "metrics-dev.json")
    assert load_member(b).tasks["t"].metrics == ["accuracy"]
    _, arrays = load_all([a, b])
    assert arrays["t"].member_scores() == [{"accuracy": 50.0}, {"accuracy": 100.0}]


def test_a_task_a_member_lacks(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(
        tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold), "u": cls_task(np.full(20, 0.6), gold)}
    )
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(20, 0.6), gold)})
    _bad(tmp_path, [a, b], r"/b: has no task 'u'; it has \[t\]", tasks=["t,u"])
    c = fake_run(tmp_path / "c", {"v": cls_task(np.full(20, 0.6), gold)})
    _bad(tmp_path, [a, c], "the members share no task")
    assert list(E.fuse([a, b]).tasks) == ["t"]  # by default, the tasks all members share


def test_dev_split_too_small_for_k_folds(tmp_path: Path) -> None:
    gold = np.array([0, 1, 0, 1, 1, 0, 1])
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(7, 0.6), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(7, 0.4), gold)})
    _bad(tmp_path, [a, b], r"task 't'.*7 examples, too few for 5-fold", method="weighted_nll")
    E.ensemble_command([a, b], tmp_path / "fine", method="weighted_nll", folds=3)
    E.ensemble_command([a, b], tmp_path / "untuned", method="mean")  # nothing tuned: no folds needed


def test_members_scored_on_different_dev_examples(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(20, 0.6), gold[::-1])})
    _bad(tmp_path, [a, b], r"task 't': dev example 0 has gold 'pos' in .*/b but 'neg' in .*/a")
    c = fake_run(tmp_path / "c", {"t": cls_task(np.full(18, 0.6), gold[:18])})
    _bad(tmp_path, [a, c], r"task 't': .*/c has 18 dev predictions but .*/a has 20")


def test_other_bad_members(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold)})
    _bad(tmp_path, [a, tmp_path / "nope"], r"nope: run directory not found")
    (tmp_path / "empty").mkdir()
    _bad(tmp_path, [a, tmp_path / "empty"], r"empty: not a run directory")
    _bad(tmp_path, [a, a], r"given twice")
    _bad(tmp_path, [a], r"unknown ensemble method 'avg'; choose from \[caruana, mean", method="avg")
    # token predictions written before full per-word distributions were saved
    tok = {
        "type": "token_classification",
        "labels": ["O", "B-X"],
        "metrics": ["seqeval_f1"],
        "records": [{"index": 0, "tags": ["O"], "probs": [0.9], "gold": ["O"]}],
    }
    old = fake_run(tmp_path / "old", {"k": tok})
    _bad(tmp_path, [old], r"old/predictions/k.jsonl:1: 'probs' holds only each word's top probability")
    broken = fake_run(tmp_path / "broken", {"t": cls_task(np.full(20, 0.6), gold)})
    with open(broken / "predictions" / "t.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
    _bad(tmp_path, [a, broken], r"broken/predictions/t.jsonl:21: not valid JSON")


# ---------------------------------------------------------------------------------------- diversity


def test_pairwise_disagreement_and_error_correlation() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    onehot = lambda d: np.eye(2)[np.asarray(d)] * 0.8 + 0.1  # noqa: E731
    P = np.stack([onehot([0, 1, 0, 1, 1, 0]), onehot([0, 1, 0, 1, 1, 0]), onehot([1, 0, 0, 1, 0, 1])])
    rec = pairwise(make_ta(P, y))
    assert rec["disagreement"][0][1] == 0.0 and rec["disagreement"][0][2] == pytest.approx(4 / 6)
    assert rec["error_correlation"][0][1] == pytest.approx(1.0)
    e0, e2 = np.array([0, 0, 0, 0, 1, 1]), np.array([1, 1, 0, 0, 0, 0])
    assert rec["error_correlation"][0][2] == pytest.approx(np.corrcoef(e0, e2)[0, 1])
    assert rec["error_rate"] == pytest.approx([2 / 6, 2 / 6, 2 / 6])
    perfect = pairwise(make_ta(np.stack([onehot(y), onehot([0, 1, 0, 1, 1, 0])]), y))
    assert perfect["error_correlation"][0][1] is None  # a member that never errs: undefined


def test_diversity_command_prints_and_saves(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    members = _two_fake_members(tmp_path)
    buf = StringIO()
    report = diversity_command(members, output=tmp_path / "div.json", console=Console(file=buf, width=120))
    saved = json.loads((tmp_path / "div.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved["tasks"]) == {"a", "r"}
    assert saved["tasks"]["r"]["disagreement_measure"] == "mean absolute difference"
    assert "disagreement above the diagonal, error correlation below it" in buf.getvalue()
    with pytest.raises(MtfuseError, match="already exists"):
        diversity_command(members, output=tmp_path / "div.json")


# ---------------------------------------------------------------------------------------- real runs


def close(a: Any, b: Any, tol: float = 2e-6) -> bool:
    """Nested dicts / lists of numbers equal within ``tol`` (other leaves exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= tol
    return bool(a == b)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("method", sorted(set(E.METHODS.names()) - {"stack"}))
def test_an_ensemble_of_one_member_equals_that_member(
    runs: dict[str, Path], tmp_path: Path, method: str
) -> None:
    out = tmp_path / "one"
    fusion = E.ensemble_command([runs["mt1"]], out, method=method)
    member_metrics = json.loads((runs["mt1"] / "metrics.json").read_text())["tasks"]
    assert set(fusion.tasks) == {"sst2", "stsb", "conll"}
    for task, f in fusion.tasks.items():
        assert f.metrics == pytest.approx(member_metrics[task], abs=1e-6)
        mine, theirs = (
            _records(out / "predictions" / f"{task}.jsonl"),
            _records(runs["mt1"] / "predictions" / f"{task}.jsonl"),
        )
        for a, b in zip(mine, theirs, strict=True):
            for key in ("index", "label", "score", "tags", "gold"):
                assert close(a.get(key), b.get(key))
            if method != "vote":  # a vote's "probabilities" are vote shares smoothed by the mean
                assert close(a.get("probs"), b.get("probs"))


def test_mean_ensemble_averages_members_word_by_word(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mean"
    E.ensemble_command([runs["mt1"], runs["mt2"]], out, method="mean")
    for task in ("sst2", "conll"):
        ens = _records(out / "predictions" / f"{task}.jsonl")
        m1 = _records(runs["mt1"] / "predictions" / f"{task}.jsonl")
        m2 = _records(runs["mt2"] / "predictions" / f"{task}.jsonl")
        for e, a, b in zip(ens, m1, m2, strict=True):
            if task == "conll":
                assert len(e["probs"]) == min(len(a["probs"]), len(b["probs"]))
                for we, wa, wb in zip(e["probs"], a["probs"], b["probs"], strict=False):
                    assert we == pytest.approx({k: (wa[k] + wb[k]) / 2 for k in wa}, abs=2e-6)
                    assert e["tags"][e["probs"].index(we)] == max(we, key=we.get)
            else:
                assert e["probs"] == pytest.approx(
                    {k: (a["probs"][k] + b["probs"][k]) / 2 for k in a["probs"]}, abs=2e-6
                )
    stsb = _records(out / "predictions" / "stsb.jsonl")
    s1, s2 = (
        _records(runs["mt1"] / "predictions" / "stsb.jsonl"),
        _records(runs["mt2"] / "predictions" / "stsb.jsonl"),
    )
    assert [r["score"] for r in stsb] == pytest.approx(
        [(a["score"] + b["score"]) / 2 for a, b in zip(s1, s2, strict=True)]
    )


def test_mixed_single_and_multi_task_members_share_their_common_task(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    fusion = E.ensemble_command(
        [runs["st"], runs["mt1"], runs["mt2"]],
        tmp_path / "mix",
        method="caruana",
        folds=3,
        console=Console(file=buf, width=150),
    )
    assert list(fusion.tasks) == ["sst2"]
    text = buf.getvalue()
    assert "member 3" in text and "out-of-fold" in text and "error correlation" in text
    assert json.loads((tmp_path / "mix" / "diversity.json").read_text())["tasks"]["sst2"]["units"] == 24


def test_ensemble_predictor_combines_the_members(runs: dict[str, Path], tmp_path: Path) -> None:
    from mtfuse.predict import Predictor

    out = tmp_path / "pred_ens"
    E.ensemble_command([runs["mt1"], runs["mt2"]], out, method="weighted_nll", folds=3)
    weights = json.loads((out / "ensemble.json").read_text())["tasks"]
    ep = E.EnsemblePredictor(out)
    p1, p2 = Predictor(runs["mt1"]), Predictor(runs["mt2"])
    rows = [{"sentence": "a gripping , funny film ."}, {"sentence": "dull and flat"}]
    got = ep.predict_rows("sst2", rows)
    w = weights["sst2"]["weights"]
    for r, a, b in zip(got, p1.predict_rows("sst2", rows), p2.predict_rows("sst2", rows), strict=True):
        assert r["probs"] == pytest.approx(
            {k: w[0] * a["probs"][k] + w[1] * b["probs"][k] for k in a["probs"]}, abs=2e-6
        )
        assert r["label"] == max(r["probs"], key=r["probs"].get)
    pairs = [{"sentence1": "A man plays a guitar.", "sentence2": "A man is playing music."}]
    (reg,) = ep.predict_rows("stsb", pairs)
    w = weights["stsb"]["weights"]
    expect = (
        w[0] * p1.predict_rows("stsb", pairs)[0]["score"] + w[1] * p2.predict_rows("stsb", pairs)[0]["score"]
    )
    assert reg["score"] == pytest.approx(expect, abs=1e-5)
    toks = ep.predict_rows(
        "conll", [{"tokens": ["EU", "rejects", "German", "call"]}, {"tokens": "Peter went"}]
    )
    assert [len(r["tags"]) for r in toks] == [4, 2] and toks[1]["tokens"] == ["Peter", "went"]
    assert all(set(w) == set(weights["conll"]["labels"]) for w in toks[0]["probs"])
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    assert ep.predict_file("sst2", src)[0]["probs"] == pytest.approx(got[0]["probs"])
    with pytest.raises(MtfuseError, match=r"unknown task 'cola'; this ensemble has \[sst2, stsb, conll\]"):
        ep.predict_rows("cola", rows)
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    spec = json.loads((moved / "ensemble.json").read_text())
    spec["members"][0]["path"] = str(tmp_path / "gone")
    (moved / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(MtfuseError, match="member run directory .*gone not found"):
        E.EnsemblePredictor(moved)
