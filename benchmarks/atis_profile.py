"""ATIS joint intent + slots on MiniLM: single-task vs inside a mix with SST-2 + CoNLL-2003, against the
baseline of the majority train intent and all-O slots, on the full ATIS test (893 utterances).

Seeded subsets (``--train`` utterances / sentences per task, ``--eval`` dev examples per task for the model
selection-free final dev score); the single-task run takes ``--steps`` steps and the mix ``3 x --steps`` with
proportional sampling over equal subsets, so ATIS sees about as many batches in both. Test labels unseen in train
count as errors (configs/atis.yaml's policy), so test keeps its 893 utterances.

CPU run (measured: 23 minutes on two cores shared at a load average of about 13; --steps 50 took 8):
    .venv/bin/python benchmarks/atis_profile.py --train 1000 --steps 80 --batch-size 16 --lr 2e-4
Full-size run on a GPU (every train utterance, the config's epochs):
    .venv/bin/python benchmarks/atis_profile.py --train 0 --eval 0 --epochs 10 --batch-size 32 --lr 5e-5 --gpu
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NEVER = 10**9  # eval_every / checkpoint_every: only at the last step

ATIS = {
    "name": "atis",
    "type": "intent_slots",
    "data": {"format": "atis", "path": "{data_dir}/atis"},
    "max_length": 64,
    "intent_slots": {"slot_weight": 1.0, "unseen_labels": "unseen_class"},
}
SST2 = {
    "name": "sst2",
    "type": "classification",
    "data": {"format": "glue", "task": "SST-2", "path": "{data_dir}/glue/SST-2"},
}
CONLL = {
    "name": "conll",
    "type": "token_classification",
    "data": {"format": "conll", "path": "{data_dir}/conll2003"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--train", type=int, default=1000, help="seeded train subset per task (0: all)")
    p.add_argument("--eval", type=int, default=300, help="seeded dev subset per task (0: all)")
    p.add_argument("--steps", type=int, default=150, help="single-task steps (the mix: 3x)")
    p.add_argument("--epochs", type=float, default=None, help="epochs instead of --steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--gpu", action="store_true", help="use a GPU where there is one (default: the CPU)")
    p.add_argument(
        "--output", type=Path, default=None, help="default benchmarks/results/atis_profile-<dev>.json"
    )
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "atis_profile")
    return p.parse_args(argv)


def _config(args: argparse.Namespace, tasks: list[dict[str, Any]], steps: int | None) -> Any:
    from mtfuse.config import from_dict

    train: dict[str, Any] = {
        "seed": args.seed,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "eval_every": NEVER,
        "checkpoint_every": NEVER,
        "checkpoint_minutes": None,
        "tensorboard": False,
        "progress": False,
        "cpu": not args.gpu,
        "diagnostics": False,
    }
    train.update({"max_steps": steps} if steps else {"epochs": args.epochs})
    subset = {"train": args.train or None, "eval": args.eval or None, "seed": args.seed}
    return from_dict(
        {"data_dir": args.data_dir, "tasks": tasks, "train": train, "subset": subset}, "atis_profile"
    )


def _run(
    args: argparse.Namespace, name: str, tasks: list[dict[str, Any]], steps: int | None
) -> dict[str, Any]:
    from mtfuse.evaluate import evaluate_run
    from mtfuse.train import train

    run = args.work_dir / name
    start = time.perf_counter()
    dev = train(_config(args, tasks, steps), run, overwrite=True)
    seconds = time.perf_counter() - start
    test, _ = evaluate_run(run, "test", ["only_tasks=[atis]"])  # the whole test split: 893
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return {
        "tasks": [t["name"] for t in tasks],
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "dev": dev["tasks"],
        "atis_test": test["tasks"]["atis"],
        "atis_test_examples": test["examples"]["atis"],
    }


def _baseline(args: argparse.Namespace) -> dict[str, Any]:
    """Majority train intent + O on every word, on the whole test split (train = the same subset)."""
    from mtfuse.baseline import majority_scores
    from mtfuse.model import load_tokenizer
    from mtfuse.tasks.prepare import prepare_tasks

    cfg = _config(args, [ATIS], args.steps)
    cfg = cfg.model_copy(update={"subset": cfg.subset.model_copy(update={"eval": None})})
    task = prepare_tasks(cfg, load_tokenizer(cfg.model.name_or_path), ["train", "test"])["atis"]
    return {"atis_test": majority_scores(task, "test"), "atis_test_examples": len(task.splits["test"])}


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    steps = None if args.epochs else args.steps
    device = "cuda" if args.gpu and torch.cuda.is_available() else "cpu"
    results = {
        "benchmark": "atis_profile",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "baseline": _baseline(args),
        "single_task": _run(args, "single", [ATIS], steps),
        "mix_sst2_conll": _run(args, "mix", [SST2, CONLL, ATIS], 3 * steps if steps else None),
    }
    out = args.output or ROOT / "benchmarks" / "results" / f"atis_profile-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for key in ("baseline", "single_task", "mix_sst2_conll"):
        print(f"{key:>15}: ATIS test {results[key]['atis_test']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
