"""Ensemble variants on one finished seed of quality_profile.py, all tuned and scored out-of-fold on dev (5 folds,
as `mtfuse ensemble`), beside the best member chosen on the whole dev set (the goal's reference) and the best
member chosen out-of-fold (the same protocol as the ensembles: how much of the reference is selection).

    .venv/bin/python benchmarks/ensemble_variants.py benchmarks/runs/quality/s1 1

Members per task, as the profile's ensembles: the single-task run, the multi-task runs and the MT-DNN run.
Variants: the registered methods (mean, caruana, caruana_bagged, weighted_metric, weighted_nll) and Caruana
et al. 2004's sorted initialisation (start from the N best members, N chosen on the tuning folds).
Output: benchmarks/results/ensemble_variants-s<SEED>.json.
"""

import json
import sys
from pathlib import Path

import numpy as np

from mtfuse.fusion.ensemble.members import align, load_member
from mtfuse.fusion.ensemble.methods import METHODS, EnsembleMethod, TuningOptions, _apply_weights
from mtfuse.fusion.ensemble.protocol import kfold_oof
from mtfuse.metrics import task_score

work = Path(sys.argv[1])
seed = int(sys.argv[2])
TASKS = ["cola", "mrpc", "rte", "stsb"]
ARMS = [a for a in ("mtl-equal", "mtl-uncertainty", "mtl-pcgrad") if (work / a / "results.json").is_file()]


def fit_select(ta, o):
    s = [task_score(x) for x in ta.member_scores()]
    w = np.zeros(ta.n_members)
    w[int(np.argmax(s))] = 1
    return {"weights": w.tolist()}


def fit_sorted(ta, o):
    """Caruana 2004 sorted initialisation: start from the N best members (N chosen on the fold), then greedy."""
    s = np.array([task_score(x) for x in ta.member_scores()])
    order = np.argsort(-s)
    best = None
    for n in range(1, ta.n_members + 1):
        w0 = np.zeros(ta.n_members)
        w0[order[:n]] = 1
        sc = ta.task_score(np.tensordot(w0 / n, ta.P, axes=1))
        if best is None or sc > best[0]:
            best = (sc, w0)
    counts = best[1].copy()
    total = np.tensordot(counts, ta.P, axes=1)
    bk = best[0]
    bc = counts.copy()
    for size in range(int(counts.sum()) + 1, o.n_iter + 1):
        cand = [ta.task_score((total + ta.P[k]) / size) for k in range(ta.n_members)]
        k = int(np.argmax(cand))
        counts[k] += 1
        total += ta.P[k]
        if cand[k] > bk:
            bk, bc = cand[k], counts.copy()
    return {"weights": (bc / bc.sum()).tolist()}


variants = {
    "select_best_oof": EnsembleMethod("sel", True, fit_select, _apply_weights, ""),
    "mean": None,
    "caruana": METHODS.get("caruana"),
    "caruana_bagged": METHODS.get("caruana_bagged"),
    "caruana_sorted": EnsembleMethod("sorted", True, fit_sorted, _apply_weights, ""),
    "weighted_metric": METHODS.get("weighted_metric"),
    "weighted_nll": METHODS.get("weighted_nll"),
}
res = {}
for t in TASKS:
    members = [work / f"st-{t}", *[work / a for a in ARMS], work / "mtdnn" / t]
    ta = align([load_member(m) for m in members], t)
    ms = [task_score(x) for x in ta.member_scores()]
    row = {
        "oracle_best_member": max(ms),
        "members": dict(zip([m.name if m.name != t else "mtdnn" for m in members], ms, strict=True)),
    }
    o = TuningOptions(seed=seed)
    for name, meth in variants.items():
        if meth is None:
            out = ta.P.mean(0)
        else:
            out, _, _ = kfold_oof(ta, meth, 5, o)
        row[name] = ta.task_score(out)
    res[t] = row
    print(
        t,
        {k: round(v, 2) for k, v in row.items() if k != "members"},
        {k: round(v, 2) for k, v in row["members"].items()},
        flush=True,
    )
avg = {k: float(np.mean([res[t][k] for t in TASKS])) for k in res[TASKS[0]] if k != "members"}
print("average", {k: round(v, 2) for k, v in avg.items()})
out = Path(__file__).resolve().parent / "results" / f"ensemble_variants-s{seed}.json"
out.write_text(
    json.dumps(
        {
            "command": "benchmarks/ensemble_variants.py " + " ".join(sys.argv[1:]),
            "members": ["st", *ARMS, "mtdnn"],
            "per_task": res,
            "average": avg,
        },
        indent=1,
    )
    + "\n"
)
print("wrote", out)
