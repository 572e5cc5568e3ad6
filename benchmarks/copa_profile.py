"""COPA multiple choice on MiniLM: single-task vs inside a mix with a GLUE task (RTE) and CoNLL-2003 NER,
against "always the first alternative" and the majority train answer, on the official 500-item COPA test file.

COPA ships no train split, so every run trains on the dev file's 500 items minus a seeded, label-stratified
fifth held out as dev (configs/copa.yaml's recipe: max length 64, batch 16, lr 2e-5, 10% warm-up). The
single-task run takes ``--steps`` steps; the mix ``3 x --steps``, proportional sampling over train subsets of
at most ``--train`` examples each (COPA has 400, so it gets about 400 / (400 + 2 x --train) of the steps).
500 test items give a binomial sd of about 2.2 points, so each system is run for every ``--seeds`` seed and
reported as mean +- sd.

CPU run (what benchmarks/results/copa_profile-cpu.json ran):
    .venv/bin/python benchmarks/copa_profile.py --steps 250 --train 400 --seeds 1 2 3
Full size on a GPU (all of RTE and CoNLL in the mix):
    .venv/bin/python benchmarks/copa_profile.py --steps 250 --train 0 --seeds 1 2 3 --gpu
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NEVER = 10**9  # eval_every / checkpoint_every: only at the last step

COPA = {
    "name": "copa",
    "type": "multiple_choice",
    "data": {
        "format": "copa",
        "path": "{data_dir}/copa/COPA-resources/datasets",
        "files": {"train": "copa-dev.xml", "test": "copa-test.xml"},
        "dev_from_train": 0.2,
    },
    "max_length": 64,
}
RTE = {
    "name": "rte",
    "type": "pair_classification",
    "data": {"format": "glue", "task": "RTE", "path": "{data_dir}/glue/RTE"},
    "max_length": 128,
}
CONLL = {
    "name": "conll",
    "type": "token_classification",
    "data": {"format": "conll", "path": "{data_dir}/conll2003"},
    "max_length": 128,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default="default", help="encoder ('default' = the packaged MiniLM)")
    p.add_argument("--train", type=int, default=400, help="seeded train subset per task in the mix (0: all)")
    p.add_argument("--eval", type=int, default=300, help="seeded dev subset per task (0: all)")
    p.add_argument("--steps", type=int, default=250, help="single-task steps (the mix: 3x)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--gpu", action="store_true", help="use a GPU where there is one (default: the CPU)")
    p.add_argument(
        "--output", type=Path, default=None, help="default benchmarks/results/copa_profile-<dev>.json"
    )
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "copa_profile")
    return p.parse_args(argv)


def _config(args: argparse.Namespace, tasks: list[dict[str, Any]], steps: int, seed: int) -> Any:
    from mtfuse.config import from_dict

    train = {
        "seed": seed,
        "max_steps": steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_ratio": 0.1,
        "eval_every": NEVER,
        "checkpoint_every": NEVER,
        "checkpoint_minutes": None,
        "tensorboard": False,
        "progress": False,
        "cpu": not args.gpu,
        "diagnostics": False,
    }
    # the subset seed stays fixed: every seed trains on the same rows and is scored on the same dev rows
    subset = {"train": args.train or None, "eval": args.eval or None, "seed": 0}
    return from_dict(
        {
            "data_dir": args.data_dir,
            "model": {"name_or_path": args.model},
            "tasks": tasks,
            "train": train,
            "subset": subset,
        },
        "copa_profile",
    )


def _run(
    args: argparse.Namespace, name: str, tasks: list[dict[str, Any]], steps: int, seed: int
) -> dict[str, Any]:
    from mtfuse.evaluate import evaluate_run
    from mtfuse.train import train

    run = args.work_dir / f"{name}-s{seed}"
    start = time.perf_counter()
    dev = train(_config(args, tasks, steps, seed), run, overwrite=True)
    seconds = time.perf_counter() - start
    test, _ = evaluate_run(run, "test", ["only_tasks=[copa]"])  # the whole test file: 500
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return {
        "seed": seed,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "dev": dev["tasks"],
        "copa_test_accuracy": round(test["tasks"]["copa"]["accuracy"], 2),
        "copa_test_examples": test["examples"]["copa"],
    }


def _baselines(args: argparse.Namespace) -> dict[str, Any]:
    """Always the first alternative, and the most frequent train answer, on the whole test file."""
    from mtfuse.baseline import majority_scores
    from mtfuse.model import load_tokenizer
    from mtfuse.tasks.prepare import prepare_tasks

    cfg = _config(args, [COPA], 1, args.seeds[0])
    cfg = cfg.model_copy(update={"subset": cfg.subset.model_copy(update={"eval": None})})
    task = prepare_tasks(cfg, load_tokenizer(cfg.model.name_or_path), ["train", "test"])["copa"]
    gold = task.gold["test"]
    first = 100.0 * sum(int(g) == 0 for g in gold) / len(gold)
    return {
        "first_alternative": {"accuracy": round(first, 2)},
        "majority_train_answer": {k: round(v, 2) for k, v in majority_scores(task, "test").items()},
        "test_examples": len(gold),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    acc = [r["copa_test_accuracy"] for r in runs]
    sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
    return {"mean": round(statistics.mean(acc), 2), "sd": round(sd, 2), "n": len(acc)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from mtfuse.machine import device_tag

    args = parse_args(argv)
    tag, device_name = device_tag(cpu=not args.gpu)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "copa_profile",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name,
        "torch_threads": torch.get_num_threads(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "baselines": _baselines(args),
    }
    systems = {"single_task": [COPA], "mix_rte_conll": [COPA, RTE, CONLL]}
    for key, tasks in systems.items():
        steps = args.steps * (1 if len(tasks) == 1 else 3)
        runs = [_run(args, key, tasks, steps, s) for s in args.seeds]
        results[key] = {
            "tasks": [t["name"] for t in tasks],
            "runs": runs,
            "copa_test_accuracy": summary(runs),
        }
        print(f"{key:>15}: COPA test accuracy {results[key]['copa_test_accuracy']}", flush=True)
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out = args.output or ROOT / "benchmarks" / "results" / f"copa_profile-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"baselines: {results['baselines']}")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
