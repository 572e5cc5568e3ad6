"""Does measured task affinity predict which tasks gain from being trained together? (issue 14, section 2)

1. `mtfuse affinity` on the tasks (a short joint run): Z[i -> j] and gradient cosines.
2. Every task alone, every pair, every triple and all tasks together, each trained with the same recipe for
   ``steps_per_task`` x (number of tasks) sampled steps, scored on the same dev subset.
3. The measured pairwise gain (mean over the pair's two tasks of pair score - single score, in points of each
   task's main metric) against the predicted pair affinity (Z[i->j] + Z[j->i]) / 2: Spearman rank correlation.
4. Budget k = 2: the recommended grouping's measured mean score vs all tasks in one model vs the mean over every
   partition into two groups (what a random grouping gives on average), all from the runs of step 2.

    python benchmarks/affinity_predicts.py --data-dir ../shared/data [--steps-per-task 80] [--quick]

Writes benchmarks/results/affinity_predicts-cpu.json (or --output). CPU: about an hour on 2 free cores; a GPU
runs it at full size with --steps-per-task 1000 --train-subset 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr

from mtfuse import config as config_mod
from mtfuse.affinity.grouping import group_score, partitions
from mtfuse.affinity.run import measure, recommend
from mtfuse.train import train

TASKS = {  # name: (task config, main metric)
    "sst2": (
        {
            "type": "classification",
            "data": {"format": "glue", "path": "{data_dir}/glue/SST-2"},
            "metrics": ["accuracy"],
        },
        "accuracy",
    ),
    "cola": (
        {
            "type": "classification",
            "data": {"format": "glue", "path": "{data_dir}/glue/CoLA"},
            "metrics": ["matthews"],
        },
        "matthews",
    ),
    "stsb": (
        {
            "type": "regression",
            "data": {"format": "glue", "path": "{data_dir}/glue/STS-B"},
            "metrics": ["pearson"],
        },
        "pearson",
    ),
    "conll": (
        {
            "type": "token_classification",
            "data": {"format": "conll", "path": "{data_dir}/conll2003"},
            "metrics": ["seqeval_f1"],
        },
        "seqeval_f1",
    ),
}


def config_for(names: list[str], args: argparse.Namespace, steps: int, out: Path) -> config_mod.RunConfig:
    raw = {
        "data_dir": args.data_dir,
        "model": {"name_or_path": "default", "pooling": "mean"},
        "tasks": [{"name": n, **TASKS[n][0]} for n in names],
        "sampling": {"method": "proportional"},
        "train": {
            "max_steps": steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "warmup_ratio": 0.1,
            "seed": args.seed,
            "progress": False,
            "eval_every": steps,
            "tensorboard": False,
        },
        "subset": {"train": args.train_subset or None, "eval": args.eval_subset or None, "seed": args.seed},
        "cache_dir": str(out / "cache"),
    }
    path = out / "configs" / f"{'+'.join(names)}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return config_mod.load(path, [f"tasks.{n}.max_length={args.max_length}" for n in names])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--tasks", default="sst2,cola,stsb,conll")
    ap.add_argument("--steps-per-task", type=int, default=80)
    ap.add_argument("--affinity-steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--train-subset", type=int, default=1000)
    ap.add_argument("--eval-subset", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default="/tmp/mtfuse-affinity-bench")
    ap.add_argument("--output", default="benchmarks/results/affinity_predicts-cpu.json")
    ap.add_argument("--quick", action="store_true", help="a few steps only: checks the script runs")
    args = ap.parse_args()
    if args.quick:
        args.steps_per_task, args.affinity_steps, args.train_subset, args.eval_subset = 3, 2, 32, 32
    names = args.tasks.split(",")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    aff = measure(config_for(names, args, args.affinity_steps, work), args.affinity_steps, 1, progress=False)
    aff.update(recommend(aff))
    Z = np.array(aff["affinity"])
    aff_seconds = time.time() - t0

    scores: dict[str, dict[str, float]] = {}  # group key -> task -> main metric
    seconds: dict[str, float] = {}
    for size in range(1, len(names) + 1):
        for group in itertools.combinations(names, size):
            key = "+".join(group)
            run = work / "runs" / key
            t = time.time()
            res = train(
                config_for(list(group), args, args.steps_per_task * size, work), run, overwrite=run.exists()
            )
            seconds[key] = round(time.time() - t, 1)
            scores[key] = {n: float(res["tasks"][n][TASKS[n][1]]) for n in group}
            print(key, scores[key], flush=True)

    single = {n: scores[n][n] for n in names}
    pairs = []
    for i, j in itertools.combinations(range(len(names)), 2):
        a, b = names[i], names[j]
        key = f"{a}+{b}"
        gain = np.mean([scores[key][a] - single[a], scores[key][b] - single[b]])
        pairs.append(
            {
                "pair": key,
                "predicted": float((Z[i, j] + Z[j, i]) / 2),
                "gain": float(gain),
                "gain_each": {a: scores[key][a] - single[a], b: scores[key][b] - single[b]},
            }
        )
    rho, p = spearmanr([x["predicted"] for x in pairs], [x["gain"] for x in pairs])

    def measured(partition: tuple[tuple[int, ...], ...]) -> float:
        """Mean main-metric score over the tasks, each taken from its group's model."""
        vals = []
        for g in partition:
            key = "+".join(names[i] for i in g)
            vals += [scores[key][names[i]] for i in g]
        return float(np.mean(vals))

    two = list(partitions(len(names), 2))
    by_pred = max(two, key=lambda prt: sum(group_score(Z, g) for g in prt))
    k2 = {
        "recommended": {"groups": [[names[i] for i in g] for g in by_pred], "mean_score": measured(by_pred)},
        "all_in_one": measured((tuple(range(len(names))),)),
        "all_separate": float(np.mean(list(single.values()))),
        "random_partition_mean": float(np.mean([measured(prt) for prt in two])),
        "best_partition": max(
            ({"groups": [[names[i] for i in g] for g in prt], "mean_score": measured(prt)} for prt in two),
            key=lambda d: d["mean_score"],
        ),
        "partitions": len(two),
    }
    out = {
        "command": "python benchmarks/affinity_predicts.py "
        + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("quick",)),
        "machine": f"{platform.machine()} {platform.processor()} cpu",
        "tasks": names,
        "affinity": aff["affinity"],
        "cosine": aff["cosine"],
        "affinity_seconds": round(aff_seconds, 1),
        "scores": scores,
        "train_seconds": seconds,
        "pairs": pairs,
        "spearman_predicted_vs_gain": {"rho": float(rho), "p": float(p), "n_pairs": len(pairs)},
        "k2": k2,
        "total_seconds": round(time.time() - t0, 1),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(json.dumps({"spearman": out["spearman_predicted_vs_gain"], "k2": k2}, indent=1))


if __name__ == "__main__":
    main()
