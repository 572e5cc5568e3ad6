"""Ensemble variants on finished quality_profile.py runs, all tuned and scored out-of-fold on dev (5 folds, as
`mtfuse ensemble`), beside the best member chosen on the whole dev set (the goal's reference) and the best
member chosen out-of-fold (the same protocol as the ensembles: how much of the reference is selection).

    .venv/bin/python benchmarks/ensemble_variants.py benchmarks/runs/quality/s1 1
    .venv/bin/python benchmarks/ensemble_variants.py --name seeds --seed 1 \\
        benchmarks/runs/quality/s{1,2,3}/mtl-equal-bf16 benchmarks/runs/quality/s{1,2,3}/mtl-equal-bf16-grouped

First form, members per task as the profile's ensembles: the single-task run, the multi-task runs and the
MT-DNN run of one seed. Second form: the given multi-task runs (each with all four tasks), e.g. one recipe over
several seeds. Variants: the registered methods (mean, caruana, caruana_bagged, weighted_metric, weighted_nll)
and Caruana et al. 2004's sorted initialisation (``caruana_selection(sorted_init=True)``: start from the N best
members, N chosen on the tuning folds). Output: benchmarks/results/ensemble_variants-<NAME>.json (NAME:
s<SEED> in the first form).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mtfuse.fusion.ensemble.combiners import caruana_selection, nll
from mtfuse.fusion.ensemble.members import TaskArrays, align, load_member
from mtfuse.fusion.ensemble.methods import METHODS, EnsembleMethod, TuningOptions, _apply_weights
from mtfuse.fusion.ensemble.protocol import kfold_oof
from mtfuse.metrics import task_score

TASKS = ["cola", "mrpc", "rte", "stsb"]
RESULTS = Path(__file__).resolve().parent / "results"


def fit_select(ta: TaskArrays, o: TuningOptions) -> dict:
    """The best single member on the tuning folds (one-hot weights)."""
    s = [task_score(x) for x in ta.member_scores()]
    w = np.zeros(ta.n_members)
    w[int(np.argmax(s))] = 1
    return {"weights": w.tolist()}


def fit_sorted(ta: TaskArrays, o: TuningOptions) -> dict:
    w, _ = caruana_selection(
        ta.P, ta.task_score, o.n_iter, lambda out: nll(out, ta.y, ta.type), sorted_init=True
    )
    return {"weights": w.tolist()}


VARIANTS: dict[str, EnsembleMethod | None] = {
    "select_best_oof": EnsembleMethod("sel", True, fit_select, _apply_weights, ""),
    "mean": None,
    "caruana": METHODS.get("caruana"),
    "caruana_bagged": METHODS.get("caruana_bagged"),
    "caruana_sorted": EnsembleMethod("sorted", True, fit_sorted, _apply_weights, ""),
    "weighted_metric": METHODS.get("weighted_metric"),
    "weighted_nll": METHODS.get("weighted_nll"),
}


def profile_members(work: Path, task: str) -> list[Path]:
    arms = [
        a for a in ("mtl-equal", "mtl-uncertainty", "mtl-pcgrad") if (work / a / "results.json").is_file()
    ]
    return [work / f"st-{task}", *[work / a for a in arms], work / "mtdnn" / task]


def member_name(path: Path, task: str) -> str:
    if path.name == task:  # an MT-DNN per-task run: mtdnn/<task>
        return f"{path.parent.parent.name}/mtdnn"
    return f"{path.parent.name}/{path.name}"


def score_task(members: list[Path], task: str, seed: int) -> dict:
    ta = align([load_member(m) for m in members], task)
    ms = [task_score(x) for x in ta.member_scores()]
    row: dict = {
        "oracle_best_member": max(ms),
        "members": dict(zip([member_name(m, task) for m in members], ms, strict=True)),
    }
    o = TuningOptions(seed=seed)
    for name, meth in VARIANTS.items():
        out = ta.P.mean(0) if meth is None else kfold_oof(ta, meth, 5, o)[0]
        row[name] = ta.task_score(out)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "paths", nargs="+", type=Path, help="a seed's runs folder and its seed, or --name and runs"
    )
    p.add_argument("--name", help="result name; the paths are then multi-task member runs")
    p.add_argument("--seed", type=int, default=1, help="the folds' seed (with --name)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default: the profile's four)")
    p.add_argument("--output-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.name is None:
        if len(args.paths) != 2:
            p.error("give a seed's runs folder and the seed, or --name NAME RUN...")
        work, seed, name = args.paths[0], int(str(args.paths[1])), f"s{args.paths[1]}"
        members_of = lambda t: profile_members(work, t)  # noqa: E731
    else:
        seed, name = args.seed, args.name
        members_of = lambda t: list(args.paths)  # noqa: E731

    tasks = [t for t in args.tasks.split(",") if t]
    res = {}
    for t in tasks:
        row = res[t] = score_task(members_of(t), t, seed)
        print(
            t,
            {k: round(v, 2) for k, v in row.items() if k != "members"},
            {k: round(v, 2) for k, v in row["members"].items()},
            flush=True,
        )
    avg = {k: float(np.mean([res[t][k] for t in tasks])) for k in res[tasks[0]] if k != "members"}
    print("average", {k: round(v, 2) for k, v in avg.items()})
    out = args.output_dir / f"ensemble_variants-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "benchmarks/ensemble_variants.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {"command": command, "seed": seed, "per_task": res, "average": avg}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
