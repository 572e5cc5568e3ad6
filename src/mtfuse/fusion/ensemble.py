"""Output-level ensembles: pure functions over members' prediction arrays, a k-fold protocol, an output dir.

Every combining function takes ``P``: the members' outputs stacked as ``[M, N, C]`` (M members, N units, C
labels; a list of ``[N, C]`` arrays works too) and returns fused outputs ``[N, C]``:

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
  keeping the best bag seen; the task metric decides, the NLL breaks ties;
* :func:`kfold_oof`: the protocol. Parameters (weights, a bag, a meta-learner) are tuned on k-1 folds of the
  dev split and applied to the held-out fold; the reported score is that of the out-of-fold predictions, so
  no example is scored by parameters tuned on it. The parameters saved for ``predict`` are tuned once more on
  the whole dev split.

:func:`ensemble_command` is ``mtfuse ensemble``: it writes a run-like directory (``ensemble.json``,
``metrics.json``, ``results.json``, ``predictions/<task>.jsonl``, ``diversity.json``) atomically.
:class:`EnsemblePredictor` predicts new inputs through the members and the saved weights / meta-learner.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from mtfuse.errors import MtfuseError
from mtfuse.fusion import stack as stack_mod
from mtfuse.fusion.members import (
    ENSEMBLE,
    PREDICTIONS,
    Member,
    TaskArrays,
    is_ensemble_dir,
    load_all,
    make_records,
    metrics_record,
    stack_outputs,
)
from mtfuse.registry import Registry
from mtfuse.tasks.types import TASK_TYPES, TaskType

EPS = 1e-12
ScoreFn = Callable[[np.ndarray], float]
LossFn = Callable[[np.ndarray], float]


# ------------------------------------------------------------------------------------------ pure functions


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
    P: np.ndarray | Sequence[np.ndarray], score_fn: ScoreFn, n_iter: int = 25, loss_fn: LossFn | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Greedy ensemble selection with replacement (Caruana et al., 2004).

    Start from the best single member; at each step add (again, possibly) the member whose addition gives the
    best ``score_fn`` of the bag's mean (``loss_fn``, lower is better, breaks ties); keep the best bag seen.
    Returns the weights (each member's share of the bag) and the hill-climbing history."""
    arr = as_stack(P)
    m = arr.shape[0]

    def key(out: np.ndarray) -> tuple[float, float]:
        return (float(score_fn(out)), -float(loss_fn(out)) if loss_fn is not None else 0.0)

    keys = [key(arr[k]) for k in range(m)]
    first = max(range(m), key=lambda k: keys[k])
    counts = np.zeros(m, dtype=np.int64)
    counts[first] = 1
    total = arr[first].copy()
    best_counts, best_key = counts.copy(), keys[first]
    history = [{"size": 1, "added": first, "score": keys[first][0]}]
    for size in range(2, max(n_iter, 1) + 1):
        cand = [key((total + arr[k]) / size) for k in range(m)]
        pick = max(range(m), key=lambda k: cand[k])
        counts[pick] += 1
        total += arr[pick]
        history.append({"size": size, "added": pick, "score": cand[pick][0]})
        if cand[pick] > best_key:
            best_counts, best_key = counts.copy(), cand[pick]
    return best_counts / best_counts.sum(), history


# ------------------------------------------------------------------------------------------ protocol


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


@dataclass(frozen=True)
class Options:
    """Tuning knobs shared by the methods."""

    seed: int = 0
    n_samples: int = 64  # weighted_metric: random simplex candidates
    n_iter: int = 25  # caruana: bag size
    inner_folds: int = 3  # stack: inner cross-validation for the regularisation strength


@dataclass(frozen=True)
class Method:
    """An ensemble method: ``fit`` tunes parameters on (a fold of) the dev split, ``apply`` fuses outputs.

    ``fit(ta, options) -> params`` (JSON-ready); ``apply(P, params, task_type) -> [N, C]``."""

    name: str
    tuned: bool
    fit: Callable[[TaskArrays, Options], dict[str, Any]]
    apply: Callable[[np.ndarray, dict[str, Any], TaskType], np.ndarray]
    summary: str
    votes: bool = False  # counts decisions: no meaning for continuous outputs (regression), the mean is used


METHODS: Registry[Method] = Registry("ensemble method")


def _register(method: Method) -> None:
    METHODS.register(method.name)(method)


def _apply_weights(P: np.ndarray, params: dict[str, Any], task_type: TaskType) -> np.ndarray:
    return weighted_mean(P, params["weights"])


def _apply_vote(P: np.ndarray, params: dict[str, Any], task_type: TaskType) -> np.ndarray:
    return majority_vote(P, task_type.votes)


def _fit_uniform(ta: TaskArrays, o: Options) -> dict[str, Any]:
    return {"weights": uniform(ta.n_members).tolist()}


def _fit_nll(ta: TaskArrays, o: Options) -> dict[str, Any]:
    return {"weights": tune_weights_nll(ta.P, ta.y, ta.type).tolist()}


def _fit_metric(ta: TaskArrays, o: Options) -> dict[str, Any]:
    return {"weights": tune_weights_metric(ta.P, ta.task_score, o.n_samples, o.seed).tolist()}


def _fit_caruana(ta: TaskArrays, o: Options) -> dict[str, Any]:
    w, hist = caruana_selection(ta.P, ta.task_score, o.n_iter, lambda out: nll(out, ta.y, ta.type))
    return {"weights": w.tolist(), "history": hist}


_register(Method("mean", False, _fit_uniform, _apply_weights, "mean of the members' probabilities"))
_register(
    Method("soft_vote", False, _fit_uniform, _apply_weights, "argmax of the mean probability", votes=True)
)
_register(
    Method(
        "vote",
        False,
        _fit_uniform,
        _apply_vote,
        "majority vote, ties broken by the mean probability",
        votes=True,
    )
)
_register(Method("weighted_nll", True, _fit_nll, _apply_weights, "weighted mean, weights minimise the NLL"))
_register(
    Method("weighted_metric", True, _fit_metric, _apply_weights, "weighted mean, weights maximise the metric")
)
_register(
    Method("caruana", True, _fit_caruana, _apply_weights, "greedy selection with replacement (Caruana 2004)")
)
_register(
    Method("stack", True, stack_mod.fit_meta, stack_mod.apply_meta, "meta-learner on members' probabilities")
)

#: what a voting method becomes on continuous outputs (regression), where a vote has no meaning
VOTE_FALLBACK = "mean"


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


def kfold_oof(
    ta: TaskArrays, method: Method, k: int, options: Options
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


def fuse_task(ta: TaskArrays, method_name: str, k: int, options: Options) -> TaskFusion:
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
    return TaskFusion(ta, method_name, out, ta.score(out), params, fold_params, note)


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


# ------------------------------------------------------------------------------------------ output directory

MARKERS = (ENSEMBLE, "compare.json")


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``; never replace something mtfuse fusion did not write."""
    if output.exists() and not output.is_dir():
        raise MtfuseError(f"{output}: output path exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise MtfuseError(f"{output}: already exists; pass --overwrite to replace it")
        if not any((output / m).is_file() for m in MARKERS):
            raise MtfuseError(
                f"{output}: holds something other than an ensemble or comparison (a training run?); "
                "not replacing it, choose another --output"
            )


def write_dir_atomic(output: Path, overwrite: bool, fill: Callable[[Path], None]) -> None:
    """Write a directory through ``fill(tmp)`` beside ``output`` then rename it into place: a failure leaves
    no partial output (and an old output intact)."""
    check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, output)


def _sum_cost(members: list[Member]) -> dict[str, Any]:
    """An ensemble's cost: every member is trained and run, so parameters, training time and (members held
    together to predict) peak memory add up."""
    out: dict[str, Any] = {"members": len(members)}
    for key in ("parameters", "train_seconds", "peak_memory_mb"):
        vals = [((m.results or {}).get("cost") or {}).get(key) for m in members]
        out[key] = None if any(v is None for v in vals) else round(float(sum(vals)), 2)
        if key == "parameters" and out[key] is not None:
            out[key] = int(out[key])
    return out


def _member_record(m: Member) -> dict[str, Any]:
    return {"path": str(m.path.resolve()), "kind": m.kind}


@dataclass
class Fusion:
    """An ensemble or stack, computed and not yet written."""

    method: str
    members: list[Member]
    tasks: dict[str, TaskFusion]
    folds: int
    seed: int
    features: str
    diversity: dict[str, Any]

    @property
    def kind(self) -> str:
        return "stack" if self.method == "stack" else "ensemble"

    def metrics(self) -> dict[str, Any]:
        return metrics_record({t: f.metrics for t, f in self.tasks.items()})

    def spec(self) -> dict[str, Any]:
        """``ensemble.json``: members, method, protocol, and per task the parameters predict uses."""
        tasks = {}
        for name, f in self.tasks.items():
            rec: dict[str, Any] = {
                "type": f.ta.type.name,
                "labels": f.ta.labels,
                "metrics": f.ta.metrics,
                "method": f.method,
                "tuned": METHODS.get(f.method).tuned,
                "params": f.params,
                "weights": f.params.get("weights"),
                "fold_weights": [p["weights"] for p in f.fold_params]
                if f.fold_params and f.method != "stack"
                else None,
                "fold_regularisation": [stack_mod.regularisation(p) for p in f.fold_params]
                if f.method == "stack"
                else None,
                "out_of_fold": f.metrics,
                "member_scores": f.ta.member_scores(),
                "units": int(f.ta.P.shape[1]),
                "examples": f.ta.n_examples,
            }
            if f.note:
                rec["note"] = f.note
            tasks[name] = rec
        return {
            "format_version": 1,
            "kind": self.kind,
            "method": self.method,
            "members": [_member_record(m) for m in self.members],
            "protocol": {
                "split": "dev",
                "folds": self.folds,
                "seed": self.seed,
                "reported": "out-of-fold" if METHODS.get(self.method).tuned else "untuned",
                "features": self.features,
                "text": protocol_text(self.method, self.folds, self.seed),
            },
            "tasks": tasks,
        }

    def results(self) -> dict[str, Any]:
        """``results.json``: the run-like record compare reads (kind, metrics, cost = sum of members)."""
        import mtfuse

        return {
            "kind": self.kind,
            "method": self.method,
            "tasks": list(self.tasks),
            "metrics": self.metrics(),
            "seed": self.seed,
            "folds": self.folds,
            "members": [_member_record(m) for m in self.members],
            "cost": _sum_cost(self.members),
            "versions": {"mtfuse": mtfuse.__version__, "python": platform.python_version()},
        }

    def write(self, output: Path, overwrite: bool = False) -> None:
        from mtfuse.rundir import write_json, write_jsonl

        def fill(tmp: Path) -> None:
            write_json(tmp / ENSEMBLE, self.spec())
            write_json(tmp / "metrics.json", self.metrics())
            write_json(tmp / "results.json", self.results())
            write_json(tmp / "diversity.json", self.diversity)
            for name, f in self.tasks.items():
                write_jsonl(tmp / PREDICTIONS / f"{name}.jsonl", f.ta.records(f.out))

        write_dir_atomic(output, overwrite, fill)


def split_names(values: Sequence[str] | None) -> list[str] | None:
    """``--tasks a,b --tasks c`` -> ``[a, b, c]``; nothing -> None."""
    if not values:
        return None
    out = [v.strip() for s in values for v in str(s).split(",") if v.strip()]
    return out or None


def fuse(
    run_dirs: Sequence[str | Path],
    tasks: Sequence[str] | None = None,
    method: str = "mean",
    folds: int = 5,
    seed: int = 0,
    features: str = "probs",
    options: Options | None = None,
) -> Fusion:
    """Read the members, check them, fuse every task; nothing is written."""
    from mtfuse.fusion.diversity import diversity_report

    m = METHODS.get(method)  # unknown method: "unknown ensemble method 'x'; choose from [...]"
    stack_mod.check_features(features, method)
    members, arrays = load_all(list(run_dirs), split_names(tasks))
    if m.tuned:
        for name, ta in arrays.items():
            check_folds(name, ta.n_examples, folds)
    opts = replace(options, seed=seed) if options is not None else Options(seed=seed)
    fused = {name: fuse_task(ta, method, folds, opts) for name, ta in arrays.items()}
    return Fusion(method, members, fused, folds, seed, features, diversity_report(arrays))


def ensemble_command(
    run_dirs: Sequence[str | Path],
    output: str | Path,
    tasks: Sequence[str] | None = None,
    method: str = "mean",
    folds: int = 5,
    seed: int = 0,
    features: str = "probs",
    overwrite: bool = False,
    console: Any = None,
) -> Fusion:
    """``mtfuse ensemble RUN_DIR... --output DIR``: fuse members' dev predictions per task and write a
    run-like directory.

    Args:
        run_dirs: run directories (or ensemble directories) that share the tasks; any mix of single- and
            multi-task runs.
        output: the directory to write (refused if it exists, unless ``overwrite`` and it holds an ensemble).
        tasks: task names (``a,b`` strings are split); default: every task all members share.
        method: one of ``METHODS`` (``mean``, ``soft_vote``, ``vote``, ``weighted_nll``, ``weighted_metric``,
            ``caruana``, ``stack``).
        folds: k of the k-fold cross-validation that tunes and scores tuned methods.
        seed: the fold shuffle (and random search) seed.
        features: the stack's inputs: ``probs`` (members' probabilities; ``probs+pooled`` is refused: run
            directories hold no encoder features).
        overwrite: replace an existing ensemble directory.
        console: a ``rich`` console to print tables on (None: print nothing).

    Writes ``ensemble.json`` (members, method, protocol, per-task parameters and fold weights),
    ``metrics.json`` (out-of-fold dev metrics, the shape train writes), ``results.json`` (kind ``ensemble``
    / ``stack``, cost = sum of members), ``predictions/<task>.jsonl`` (out-of-fold) and ``diversity.json``.
    Every bad input is one ``MtfuseError`` raised before anything is written."""
    output = Path(output)
    check_output(output, overwrite)  # refuse before the slow part
    fusion = fuse(run_dirs, tasks, method, folds, seed, features)
    fusion.write(output, overwrite)
    if console is not None:
        print_fusion(fusion, output, console)
    return fusion


def print_fusion(fusion: Fusion, output: Path, console: Any) -> None:
    from rich.table import Table

    from mtfuse.fusion.diversity import LEGEND, diversity_tables

    table = Table(title=f"{fusion.kind} '{fusion.method}' ({output}): dev metrics")
    table.add_column("task")
    table.add_column("metric")
    table.add_column(fusion.kind, justify="right")
    for i in range(len(fusion.members)):
        table.add_column(f"member {i + 1}", justify="right")
    table.add_column("weights" if fusion.method != "stack" else "regularisation")
    for name, f in fusion.tasks.items():
        ms = f.ta.member_scores()
        w = f.params.get("weights")
        if w is not None:
            wtxt = ", ".join(f"{x:.2f}" for x in w)
        else:
            wtxt = ", ".join(f"{k}={v}" for k, v in stack_mod.regularisation(f.params).items())
        for j, (metric, v) in enumerate(f.metrics.items()):
            table.add_row(name, metric, f"{v:.2f}", *[f"{s[metric]:.2f}" for s in ms], wtxt if j == 0 else "")
    table.add_row("average", "", f"{fusion.metrics()['average']:.2f}", *[""] * len(fusion.members), "")
    console.print(table)
    for i, m in enumerate(fusion.members):
        console.print(f"member {i + 1}: {m.path}", highlight=False)
    console.print(LEGEND, highlight=False)
    for t in diversity_tables(fusion.diversity):
        console.print(t)
    console.print(protocol_text(fusion.method, fusion.folds, fusion.seed), highlight=False)
    console.print(f"ensemble directory: {output}", highlight=False)


# ------------------------------------------------------------------------------------------ prediction


class EnsemblePredictor:
    """Predict new inputs through every member (``mtfuse.predict.Predictor``, or a nested ensemble) and the
    ensemble's saved weights or meta-learner (JSON, never pickle)."""

    def __init__(self, ensemble_dir: str | Path, device: str | None = None, batch_size: int = 64) -> None:
        from mtfuse.fusion.members import _read_json

        self.dir = Path(ensemble_dir)
        if not is_ensemble_dir(self.dir):
            raise MtfuseError(f"{self.dir}: not an ensemble directory (no {ENSEMBLE})")
        self.spec = _read_json(self.dir / ENSEMBLE)
        self.members = [Path(m["path"]) for m in self.spec["members"]]
        for p in self.members:
            if not p.is_dir():
                raise MtfuseError(f"{self.dir / ENSEMBLE}: member run directory {p} not found")
        self.device, self.batch_size = device, batch_size
        self._predictors: dict[int, Any] = {}

    @property
    def tasks(self) -> list[str]:
        return list(self.spec["tasks"])

    def member(self, i: int) -> Any:
        if i not in self._predictors:
            from mtfuse.predict import Predictor

            path = self.members[i]
            cls = EnsemblePredictor if is_ensemble_dir(path) else Predictor
            self._predictors[i] = cls(path, device=self.device, batch_size=self.batch_size)
        return self._predictors[i]

    def predict_rows(self, task: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Records like ``Predictor.predict_rows`` (label / labels / score / tags and probabilities)."""
        if task not in self.spec["tasks"]:
            raise MtfuseError(f"unknown task '{task}'; this ensemble has [{', '.join(self.tasks)}]")
        t = self.spec["tasks"][task]
        labels = t["labels"]
        try:
            tt = TASK_TYPES.get(t["type"])
        except (KeyError, MtfuseError) as e:
            raise MtfuseError(f"{self.dir / ENSEMBLE}: task '{task}': {e}") from None
        outs = [self.member(i).predict_rows(task, rows) for i in range(len(self.members))]
        outputs = [
            [
                tt.outputs(rec, labels, f"member {self.members[m]}, input row {r + 1}")
                for r, rec in enumerate(o)
            ]
            for m, o in enumerate(outs)
        ]
        P, example = stack_outputs(tt, outputs)
        out = METHODS.get(t["method"]).apply(P, t["params"], tt)
        recs = make_records(tt, labels, out, example, len(rows))
        return [tt.complete_record(rec, first) for rec, first in zip(recs, outs[0], strict=True)]

    def predict_file(self, task: str, path: Path) -> list[dict[str, Any]]:
        from mtfuse.config import DataConfig
        from mtfuse.predict import INPUT_FORMATS
        from mtfuse.tasks.readers import READERS

        path = Path(path)
        fmt = INPUT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise MtfuseError(f"{path}: unknown input format; use one of {sorted(INPUT_FORMATS)}")
        rows = READERS.get(fmt).read(DataConfig(format=fmt, files={"test": str(path)}), "test")
        return self.predict_rows(task, rows)
