"""Single-task vs multi-task on six GLUE tasks + CoNLL-2003 (configs/glue.yaml), same hyperparameters.

Trains one single-task model per task (the config with ``only_tasks=[name]``) and one multi-task model on all
of them, then writes one results JSON and a markdown table (single-task vs multi-task per task, GLUE-style
average, train time, samples/s, peak memory, parameters).

Comparability: with ``--epochs`` (or the config's epochs) and proportional sampling, the multi-task model
takes the sum of the single-task step counts, so every task sees its data the same number of times. With
``--max-steps N`` every single-task run takes N steps and the multi-task run N x (number of tasks) steps, so
each task sees about the same number of examples (exactly so in expectation when the train sets are equally
large, as with ``--subset-train``).

Each training runs in its own spawned process, so peak memory (resident set on the CPU, allocated CUDA memory
on a GPU) is that run's own.

CPU subset run (minutes):
    .venv/bin/python benchmarks/glue_mtl.py --subset-train 256 --subset-eval 200 --max-steps 40
Full run on a GPU (the config's 3 epochs):
    .venv/bin/python benchmarks/glue_mtl.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "glue.yaml"
RESULTS_DIR = ROOT / "benchmarks" / "results"
RUNS_DIR = ROOT / "benchmarks" / "runs"
NEVER = 10**9  # eval_every / checkpoint_every: only at the last step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="multi-task config (default configs/glue.yaml)"
    )
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="default ../shared/data")
    p.add_argument(
        "--subset-train", type=int, default=None, help="seeded subset of N train examples per task"
    )
    p.add_argument("--subset-eval", type=int, default=None, help="seeded subset of N dev examples per task")
    p.add_argument(
        "--max-steps", type=int, default=None, help="steps per single-task run (multi-task: x tasks)"
    )
    p.add_argument("--epochs", type=float, default=None, help="epochs (default: the config's train.epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's train.batch_size")
    p.add_argument(
        "--tasks", default=None, help="comma list of task names (default: every task of the config)"
    )
    p.add_argument("--model", default="default", help="encoder: 'default' (packaged MiniLM), dir or hub name")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", type=Path, default=None, help="results JSON (default benchmarks/results/...)")
    p.add_argument(
        "--work-dir", type=Path, default=None, help="run directories (default benchmarks/runs/...)"
    )
    p.add_argument("--reuse", action="store_true", help="reuse runs that already have a results.json")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's checkpoints/ folder")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    p.add_argument("--progress", action="store_true", help="show each run's progress bar")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides for all runs"
    )
    args = p.parse_args(argv)
    if args.max_steps is not None and args.epochs is not None:
        p.error("give --max-steps or --epochs, not both")
    return args


# ------------------------------------------------------------------------------------------------ running


def _train_child(config: str, overrides: list[str], run_dir: str) -> None:
    """Runs in a fresh (spawned) process: one mtfuse training."""
    from mtfuse import config as config_mod
    from mtfuse.train import train

    cfg = config_mod.load(config, overrides)
    train(cfg, run_dir, overwrite=True)


def run_training(config: Path, overrides: list[str], run_dir: Path, reuse: bool, keep_ckpt: bool) -> dict:
    results = run_dir / "results.json"
    if reuse and results.is_file():
        print(f"reusing {run_dir}", flush=True)
        rec = json.loads(results.read_text())
        wall_file = run_dir / "benchmark_wall_seconds.txt"
        rec["wall_seconds"] = float(wall_file.read_text()) if wall_file.is_file() else None
        return rec
    print(f"\n=== {run_dir.name}: {' '.join(overrides)}", flush=True)
    t0 = time.perf_counter()
    proc = mp.get_context("spawn").Process(target=_train_child, args=(str(config), overrides, str(run_dir)))
    proc.start()
    proc.join()
    wall = time.perf_counter() - t0
    if proc.exitcode != 0:
        sys.exit(f"training {run_dir.name} failed (exit code {proc.exitcode}); its run directory: {run_dir}")
    if not keep_ckpt and (run_dir / "checkpoints").is_dir():
        shutil.rmtree(run_dir / "checkpoints")
    rec = json.loads(results.read_text())
    rec["wall_seconds"] = round(wall, 1)
    (run_dir / "benchmark_wall_seconds.txt").write_text(f"{wall:.1f}\n")
    return rec


# ---------------------------------------------------------------------------------------------- reporting


def task_score(metrics: dict[str, float]) -> float:
    from mtfuse.metrics import task_score as ts

    return ts(metrics)


def summarize(rec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a run's results.json the benchmark keeps."""
    cost = rec["cost"]
    samples = cost["train_samples_per_second"] * cost["train_seconds"]
    return {
        "tasks": rec["tasks"],
        "metrics": rec["metrics"]["tasks"],
        "average": rec["metrics"]["average"],
        "steps": rec["steps"],
        "train_samples": round(samples),
        "train_seconds": cost["train_seconds"],
        "train_samples_per_second": cost["train_samples_per_second"],
        "wall_seconds": rec.get("wall_seconds"),
        "peak_memory_mb": cost["peak_memory_mb"],
        "parameters": cost["parameters"],
        "encoder_parameters": cost["encoder_parameters"],
        "head_parameters": cost["head_parameters"],
        "device": cost["device"],
        "precision": cost["precision"],
    }


def aggregate_single(singles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from mtfuse.metrics import aggregate

    metrics = {t: r["metrics"][t] for t, r in singles.items()}
    seconds = sum(r["train_seconds"] for r in singles.values())
    samples = sum(r["train_samples"] for r in singles.values())
    walls = [r["wall_seconds"] for r in singles.values()]
    return {
        "models": len(singles),
        "metrics": metrics,
        "average": aggregate(metrics),
        "steps": sum(r["steps"] for r in singles.values()),
        "train_samples": samples,
        "train_seconds": round(seconds, 2),
        "train_samples_per_second": round(samples / max(seconds, 1e-9), 2),
        "wall_seconds": round(sum(walls), 1) if all(w is not None for w in walls) else None,
        "peak_memory_mb": max(r["peak_memory_mb"] for r in singles.values()),
        "parameters": sum(r["parameters"] for r in singles.values()),
    }


def _fmt_metrics(ms: dict[str, float]) -> str:
    return " / ".join(f"{v:.1f}" for v in ms.values())


def markdown_table(single: dict[str, Any], multi: dict[str, Any], title: str, note: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| task | metric | single-task | multi-task | Δ (task score) |",
        "|---|---|---:|---:|---:|",
    ]
    for task, ms in single["metrics"].items():
        mm = multi["metrics"][task]
        delta = task_score(mm) - task_score(ms)
        lines.append(
            f"| {task} | {' / '.join(ms)} | {_fmt_metrics(ms)} | {_fmt_metrics(mm)} | {delta:+.1f} |"
        )
    d = multi["average"] - single["average"]
    lines.append(
        f"| **average** | GLUE-style | {single['average']:.1f} | {multi['average']:.1f} | {d:+.1f} |"
    )
    n = single["models"]
    s, m = single, multi

    def wall(x: dict[str, Any]) -> str:
        return "n/a" if x["wall_seconds"] is None else f"{x['wall_seconds']:.0f}"

    lines += [
        "",
        f"| cost | single-task ({n} models) | multi-task (1 model) |",
        "|---|---:|---:|",
        f"| parameters | {single['parameters'] / 1e6:.1f} M | {multi['parameters'] / 1e6:.1f} M |",
        f"| optimizer steps | {single['steps']} | {multi['steps']} |",
        f"| train examples seen (≈) | {single['train_samples']} | {multi['train_samples']} |",
        f"| train time (s, optimizer steps only) | {s['train_seconds']:.1f} | {m['train_seconds']:.1f} |",
        f"| train samples/s | {s['train_samples_per_second']:.1f} | {m['train_samples_per_second']:.1f} |",
        f"| wall time (s, incl. loading, eval, saving) | {wall(s)} | {wall(m)} |",
        f"| peak memory (MB, max over runs) | {s['peak_memory_mb']:.0f} | {m['peak_memory_mb']:.0f} |",
        "",
        note,
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    from mtfuse.machine import device_tag

    args = parse_args(argv)
    import torch
    import transformers

    import mtfuse
    from mtfuse import config as config_mod

    base_cfg = config_mod.load(args.config, [f"data_dir={args.data_dir}"])
    all_tasks = [t.name for t in base_cfg.tasks]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else all_tasks
    unknown = [t for t in tasks if t not in all_tasks]
    if unknown:
        sys.exit(f"unknown task(s) {unknown}; choose from {all_tasks}")
    if len(tasks) < 2:
        sys.exit("a multi-task comparison needs at least two tasks")

    dev, dev_name = device_tag(args.cpu)
    if args.subset_train or args.subset_eval or args.max_steps:
        size = f"subset{args.subset_train or 'all'}-{args.subset_eval or 'all'}"
        size += f"-steps{args.max_steps}" if args.max_steps else ""
    else:
        size = "full"
    name = f"glue_mtl-{dev}-{size}"
    output = args.output or RESULTS_DIR / f"{name}.json"
    work = args.work_dir or RUNS_DIR / name

    common = [
        f"data_dir={args.data_dir}",
        f"model.name_or_path={args.model}",
        f"train.seed={args.seed}",
        f"train.eval_every={NEVER}",  # metrics of the final model only; no evaluation cost mid-run
        "train.tensorboard=false",
        "train.keep_checkpoints=1",
        f"train.progress={str(args.progress).lower()}",
    ]
    if args.subset_train:
        common.append(f"subset.train={args.subset_train}")
    if args.subset_eval:
        common.append(f"subset.eval={args.subset_eval}")
    if args.epochs is not None:
        common.append(f"train.epochs={args.epochs}")
    if args.batch_size is not None:
        common.append(f"train.batch_size={args.batch_size}")
    if args.cpu:
        common.append("train.cpu=true")
    common += args.set

    if args.max_steps:
        note = (
            f"Steps: every single-task run takes {args.max_steps} optimizer steps and the multi-task run "
            f"{args.max_steps} x {len(tasks)} = {args.max_steps * len(tasks)} ({base_cfg.sampling.method} "
            "sampling), so each task sees about the same number of training examples in both settings."
        )
    else:
        epochs = args.epochs if args.epochs is not None else base_cfg.train.epochs
        note = (
            f"Steps: {epochs:g} epochs everywhere; with {base_cfg.sampling.method} sampling the multi-task "
            "run takes the sum of the single-task step counts, so each task sees its data about as often."
        )
    if args.subset_train or args.subset_eval:
        note += (
            f" Data: seeded subsets (train {args.subset_train or 'all'}, dev {args.subset_eval or 'all'} "
            "examples per task); metrics are on the dev subset, far from full-data numbers."
        )

    # ---- runs ----------------------------------------------------------------------------------------
    raw: dict[str, dict[str, Any]] = {}
    for t in tasks:
        ov = common + [f"only_tasks=[{t}]"]
        if args.max_steps:
            ov.append(f"train.max_steps={args.max_steps}")
        raw[f"single-{t}"] = run_training(
            args.config, ov, work / f"single-{t}", args.reuse, args.keep_checkpoints
        )
    ov = common + [f"only_tasks=[{','.join(tasks)}]"]
    if args.max_steps:
        ov.append(f"train.max_steps={args.max_steps * len(tasks)}")
    raw["multi"] = run_training(args.config, ov, work / "multi", args.reuse, args.keep_checkpoints)

    # ---- results -------------------------------------------------------------------------------------
    singles = {t: summarize(raw[f"single-{t}"]) for t in tasks}
    multi = summarize(raw["multi"])
    multi["models"] = 1
    single = aggregate_single(singles)
    precision = {"no": "fp32"}.get(multi["precision"], multi["precision"])
    title = f"Single-task vs multi-task, {len(tasks)} tasks, {dev_name} ({precision}), {size}"
    table = markdown_table(single, multi, title, note)
    mcfg = raw["multi"]["config"]
    result = {
        "benchmark": "glue_mtl",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {"tag": dev, "name": dev_name, "torch_threads": torch.get_num_threads()},
        "versions": {
            "mtfuse": mtfuse.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "command": "benchmarks/glue_mtl.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {
            "config": os.path.relpath(args.config, ROOT),
            "tasks": tasks,
            "model": args.model,
            "seed": args.seed,
            "subset": mcfg["subset"],
            "sampling": mcfg["sampling"],
            "weighting": mcfg["weighting"],
            "train": {
                k: mcfg["train"][k]
                for k in (
                    "epochs",
                    "batch_size",
                    "lr",
                    "weight_decay",
                    "warmup_ratio",
                    "max_grad_norm",
                    "precision",
                    "scheduler",
                    "select",
                )
            },
            "single_task_max_steps": args.max_steps,
            "multi_task_max_steps": args.max_steps * len(tasks) if args.max_steps else None,
            "note": note,
        },
        "single_task": {"total": single, "runs": singles},
        "multi_task": multi,
        "table_markdown": table,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    output.with_suffix(".md").write_text(table, encoding="utf-8")
    print()
    print(table)
    print(f"wrote {output} and {output.with_suffix('.md')}; run directories under {work}")


if __name__ == "__main__":
    main()
