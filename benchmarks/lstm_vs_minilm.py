"""What pretraining buys: the from-scratch embedding + BiLSTM encoder against MiniLM on the quality profile.

The profile of ``benchmarks/quality_profile.yaml`` (CoLA, MRPC, RTE, STS-B; seeded 1,000-example train subsets,
the same rows for every seed; full dev sets; max length 128, batch 32; only the final model scored), with
``model.name_or_path=lstm`` (``model.lstm`` at its defaults: 128-dim embeddings, one BiLSTM layer of 256 per
direction, MiniLM's word pieces) and mean pooling. Two steps, resumable (a run that has its output is kept):

    search   the learning rate, on single-task LSTM runs (train.seed 0, not a reported seed) scored on train
             rows outside the subset (``mtfuse evaluate --split train-holdout``, as quality_profile.py does),
             never on dev; the best average over the tasks is the recipe.
    run      with that learning rate, for ``--seed``: one single-task run per task and one multi-task run
             (equal weighting, proportional sampling: as the profile's mtl-equal arm), scored on dev.

Output: ``results/lstm_vs_minilm-cpu.json`` (the recipe search, both LSTM systems' dev scores per task, their
parameters and train time) and, when ``results/quality_profile-s<SEED>.json`` exists, MiniLM's single-task and
mtl-equal scores beside them and the difference (MiniLM - LSTM: what pretraining buys); a markdown table is
printed. A task's score is the mean of its metrics (GLUE style), as in the profile.

    .venv/bin/python benchmarks/lstm_vs_minilm.py --seed 1           # search (once), then the seed's runs
    .venv/bin/python benchmarks/lstm_vs_minilm.py --smoke --threads 1   # 64 examples, 3 steps: checks it works

From random weights an LSTM wants a larger learning rate than fine-tuning (the grid: ``--lrs``, default 1e-3 and
3e-3) and more epochs (``--epochs``, default 10, for every run). ``--threads N`` sets OMP_NUM_THREADS for the runs:
tiny recurrent steps can be faster on one thread than on two busy cores. Runs go to
``benchmarks/runs/lstm_vs_minilm-e<EPOCHS>/``; ``--smoke`` keeps its runs and result in
``benchmarks/runs/lstm_vs_minilm-smoke/`` (never in results/).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_profile as qp  # noqa: E402  (the profile's config, CLI runner and conventions)

TASKS = qp.TASKS
LSTM = ["model.name_or_path=lstm", "model.pooling=mean"]
SEARCH_SEED = qp.SEARCH_SEED
SMOKE = {"train": 64, "eval": 32, "steps": 3}  # --smoke: subset sizes and steps per single-task run
MINILM_ARMS = {"single-task": "single-task", "multi-task": "mtl-equal"}  # our system -> the profile's


def budget(args: argparse.Namespace, tasks: int = 1) -> list[str]:
    """Overrides for the data and the training length (``tasks``: how many tasks the run trains)."""
    if args.smoke:
        return [
            f"subset.train={SMOKE['train']}",
            f"subset.eval={SMOKE['eval']}",
            f"train.max_steps={SMOKE['steps'] * tasks}",
        ]
    return [f"train.epochs={args.epochs}"]


def scores_of(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {t: qp.task_score(m) for t, m in metrics.items()}


def search(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Single-task runs for each learning rate, scored on train-holdout; the best average wins."""
    rows = []
    for lr in args.lrs:
        scores = {}
        for t in TASKS:
            run = qp.train(
                work / "search" / f"lr{lr:g}" / t,
                SEARCH_SEED,
                *LSTM,
                *budget(args),
                f"only_tasks=[{t}]",
                f"train.lr={lr}",
            )
            holdout = run / "metrics-train-holdout.json"
            if not holdout.is_file():
                qp.cli("evaluate", run, "--split", "train-holdout", log=run.with_suffix(".holdout.log"))
            scores[t] = qp.task_score(json.loads(holdout.read_text())["tasks"][t])
        avg = statistics.fmean(scores.values())
        rows.append({"lr": lr, "tasks": scores, "average": avg})
        print(
            f"lr {lr:g}: train-holdout average {avg:.2f}  "
            + "  ".join(f"{t} {s:.1f}" for t, s in scores.items())
        )
    best = max(rows, key=lambda r: r["average"])
    return {"split": "train-holdout", "seed": SEARCH_SEED, "recipes": rows, "best_lr": best["lr"]}


def system(runs: list[Path]) -> dict[str, Any]:
    """Dev scores, parameters and train time of one system (one run per task, or one multi-task run)."""
    metrics: dict[str, dict[str, float]] = {}
    params, seconds = 0, 0.0
    for r in runs:
        metrics.update(json.loads((r / "metrics.json").read_text())["tasks"])
        cost = json.loads((r / "results.json").read_text()).get("cost") or {}
        params += cost.get("parameters") or 0
        seconds += cost.get("train_seconds") or 0.0
    tasks = scores_of(metrics)
    return {
        "tasks": tasks,
        "metrics": metrics,
        "average": statistics.fmean(tasks[t] for t in TASKS),
        "parameters": params,
        "train_seconds": round(seconds, 1),
        "runs": [str(r) for r in runs],
    }


def minilm(seed: int) -> dict[str, Any] | None:
    """The profile's MiniLM single-task and mtl-equal scores for ``seed`` (None before the profile ran)."""
    path = qp.RESULTS / f"quality_profile-s{seed}.json"
    if not path.is_file():
        return None
    systems = json.loads(path.read_text())["systems"]
    out: dict[str, Any] = {"source": str(path.relative_to(qp.ROOT))}
    for ours, theirs in MINILM_ARMS.items():
        if theirs in systems:
            s = systems[theirs]
            out[ours] = {
                "tasks": s["tasks"],
                "average": statistics.fmean(s["tasks"][t] for t in TASKS),
                "parameters": s["parameters"],
                "train_seconds": s["train_seconds"],
            }
    return out


def gains(lstm: dict[str, Any], mini: dict[str, Any] | None) -> dict[str, Any] | None:
    """MiniLM - LSTM per task and on average, for each system both have."""
    if mini is None:
        return None
    out = {}
    for name in MINILM_ARMS:
        if name in mini:
            d = {t: mini[name]["tasks"][t] - lstm[name]["tasks"][t] for t in TASKS}
            out[name] = {"tasks": d, "average": mini[name]["average"] - lstm[name]["average"]}
    return out


def markdown(out: dict[str, Any]) -> str:
    head = "| system | " + " | ".join(TASKS) + " | average | parameters | train s |"
    lines = [head, "|---|" + "---:|" * (len(TASKS) + 3)]
    rows = [(f"lstm {n}", s) for n, s in out["lstm"].items()]
    rows += [(f"minilm {n}", s) for n, s in (out["minilm"] or {}).items() if n != "source"]
    for name, s in rows:
        lines.append(
            f"| {name} | "
            + " | ".join(f"{s['tasks'][t]:.1f}" for t in TASKS)
            + f" | {s['average']:.1f} | {s['parameters'] / 1e6:.1f}M | {s['train_seconds']:.0f} |"
        )
    for name, g in (out["pretraining_gain"] or {}).items():
        lines.append(
            f"| gain {name} (minilm - lstm) | "
            + " | ".join(f"{g['tasks'][t]:+.1f}" for t in TASKS)
            + f" | {g['average']:+.1f} | | |"
        )
    if out["minilm"] is None:
        lines.append(f"\n(no results/quality_profile-s{out['seed']}.json yet: MiniLM not compared)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1, help="train.seed of the reported runs (default 1)")
    p.add_argument("--lrs", type=lambda s: [float(x) for x in s.split(",")], default=[1e-3, 3e-3])
    p.add_argument("--epochs", type=float, default=10.0, help="epochs of every run (not with --smoke)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs")
    p.add_argument("--smoke", action="store_true", help="64 train / 32 eval examples, 3 steps a task")
    args = p.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the mtfuse subprocesses inherit it
    # the budget names the folder: runs of another budget are never reused as if they were this one's
    work = (
        qp.ROOT
        / "benchmarks"
        / "runs"
        / ("lstm_vs_minilm-smoke" if args.smoke else f"lstm_vs_minilm-e{args.epochs:g}")
    )
    t0 = time.perf_counter()
    recipe = search(args, work)
    lr, seed = recipe["best_lr"], args.seed
    common = [*LSTM, f"train.lr={lr}"]
    st = [
        qp.train(work / f"s{seed}" / f"st-{t}", seed, *common, *budget(args), f"only_tasks=[{t}]")
        for t in TASKS
    ]
    mt = qp.train(work / f"s{seed}" / "mtl-equal", seed, *common, *budget(args, len(TASKS)))
    lstm = {"single-task": system(st), "multi-task": system([mt])}
    mini = None if args.smoke else minilm(seed)
    out = {
        "benchmark": "lstm_vs_minilm",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "benchmarks/lstm_vs_minilm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": seed,
        "smoke": args.smoke,
        "machine": qp.machine(),
        "threads": args.threads,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "profile": str(qp.CONFIG.relative_to(qp.ROOT)),
        "recipe": {
            "lr": lr,
            "epochs": None if args.smoke else args.epochs,
            "overrides": [*common, *budget(args)],
            "search": recipe,
        },
        "lstm": lstm,
        "minilm": mini,
        "pretraining_gain": gains(lstm, mini),
    }
    path = work / "result.json" if args.smoke else qp.RESULTS / "lstm_vs_minilm-cpu.json"
    qp.write_json(path, out)
    print(markdown(out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
