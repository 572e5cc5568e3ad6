"""Extractive QA on XQuAD (English), split by article (seeded): MiniLM trained on XQuAD alone vs inside a mix
with GLUE (SST-2, RTE) + CoNLL-2003 subsets, against the baseline "the first sentence of the context as the
answer". Scores are SQuAD v1.1 exact match / F1 on the article-split dev articles.

The mix uses the round-robin sampler with ``n_tasks x --steps`` steps, so XQuAD takes as many steps (and sees as
many windows) as alone. Each run trains in this process, one after the other; wall time per run is recorded.

CPU profile (minutes on a busy 2-core machine; what benchmarks/results/span_qa_profile-cpu.json ran):
    .venv/bin/python benchmarks/span_qa_profile.py --cpu --steps 8 --batch-size 8 --max-length 192 \
        --doc-stride 64 --subset-train 96 --subset-eval 48
Full size on a GPU (all 679 train questions of the 28 train articles, 2 epochs, 384-token windows):
    .venv/bin/python benchmarks/span_qa_profile.py --steps 0 --max-length 384 --subset-train 0 --subset-eval 0
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "span_qa_profile"
SPLIT = {"train": 0.6, "dev": 0.2, "test": 0.2}


def _tasks(data: str, max_length: int, stride: int, mix: bool) -> list[dict[str, Any]]:
    qa = {
        "name": "xquad",
        "type": "span_qa",
        "data": {
            "format": "squad",
            "files": {"train": f"{data}/xquad/xquad.en.json"},
            "split_by_article": SPLIT,
        },
        "max_length": max_length,
        "span_qa": {"doc_stride": stride},
    }
    if not mix:
        return [qa]
    return [
        qa,
        {
            "name": "sst2",
            "type": "classification",
            "data": {"format": "glue", "task": "SST-2", "path": f"{data}/glue/SST-2"},
        },
        {
            "name": "rte",
            "type": "pair_classification",
            "data": {"format": "glue", "task": "RTE", "path": f"{data}/glue/RTE"},
        },
        {
            "name": "conll",
            "type": "token_classification",
            "data": {"format": "conll", "path": f"{data}/conll2003"},
        },
    ]


def _config(args: argparse.Namespace, mix: bool) -> Any:
    from mtfuse.config import RunConfig

    tasks = _tasks(args.data_dir, args.max_length, args.doc_stride, mix)
    steps = args.steps * len(tasks) if args.steps else None
    train: dict[str, Any] = {
        "seed": args.seed,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "progress": False,
        "tensorboard": False,
        "cpu": args.cpu,
        "checkpoint_minutes": None,
    }
    train.update({"max_steps": steps} if steps else {"epochs": 2.0})
    return RunConfig.model_validate(
        {
            "tasks": tasks,
            "model": {"name_or_path": args.model},
            "subset": {
                "train": args.subset_train or None,
                "eval": args.subset_eval or None,
                "seed": args.seed,
            },
            "sampling": {"method": "round_robin"},
            "train": train,
            "cache_dir": str(RUNS / "cache"),
        }
    )


def _baseline(cfg: Any) -> dict[str, float]:
    """First sentence of the context, scored on the same dev questions the runs are scored on."""
    from mtfuse.metrics import exact_match, squad_f1
    from mtfuse.tasks.prepare import read_task_rows, subset_rows
    from mtfuse.tasks.types.span_qa import first_sentence

    rows = subset_rows(read_task_rows(cfg, "xquad", "dev"), cfg.subset.eval, cfg.subset.seed, "xquad", "dev")
    preds = [first_sentence(r["context"]) for r in rows]
    golds = [[a["text"] for a in r["answers"]] for r in rows]
    return {
        "exact_match": exact_match(preds, golds),
        "squad_f1": squad_f1(preds, golds),
        "examples": len(rows),
    }


def _run(cfg: Any, name: str) -> dict[str, Any]:
    from mtfuse.train import train

    t0 = time.perf_counter()
    metrics = train(cfg, RUNS / name, overwrite=True)
    wall = time.perf_counter() - t0
    results = json.loads((RUNS / name / "results.json").read_text())
    print(f"{name}: {json.dumps(metrics['tasks'].get('xquad'))} in {wall:.0f}s", flush=True)
    return {
        "tasks": metrics["tasks"],
        "wall_seconds": round(wall, 1),
        "steps": cfg.train.max_steps,
        "cost": results.get("cost"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default="default", help="'default' = the packaged MiniLM")
    p.add_argument("--steps", type=int, default=40, help="XQuAD steps (the mix: x 4); 0 = 2 epochs")
    p.add_argument(
        "--subset-train", type=int, default=320, help="train questions (and rows per task); 0 = all"
    )
    p.add_argument("--subset-eval", type=int, default=120, help="dev questions (and rows per task); 0 = all")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    single, mix = _config(args, False), _config(args, True)
    out: dict[str, Any] = {
        "benchmark": "span_qa_profile",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": "cuda" if torch.cuda.is_available() and not args.cpu else f"cpu ({platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "split": {"by": "article title", "fractions": SPLIT, "seed": single.tasks[0].data.dev_seed},
        "baseline_first_sentence": _baseline(single),
    }
    print(f"baseline: {out['baseline_first_sentence']}", flush=True)
    out["single_task"] = _run(single, "single")
    out["multi_task"] = _run(mix, "mix")
    tag = "gpu" if out["device"] == "cuda" else "cpu"
    path = args.output or RESULTS / f"span_qa_profile-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
