"""Semantic role labelling (Universal PropBank on UD English-EWT): single-task vs inside a mix with a GLUE task
(RTE) and CoNLL-2003 NER, against a dependency baseline; labelled argument P / R / F1 on the test file.

The data has no train split: every model trains on the dev file's predicates minus a seeded fifth of its
sentences (held out as dev, as in configs/srl.yaml) and is scored on the whole test file (4799 predicates).

* ``baseline``: each word whose syntactic head is the predicate gets the role most frequent in train for its
  dependency relation to the predicate (when that role is an argument more often than not), every other word
  'O' (arguments sit on head words, so most of them are the predicate's dependents). All-'O' scores 0.
* ``single``: MiniLM (the packaged all-MiniLM-L6-v2) on SRL alone, ``--steps`` steps.
* ``mix``: one MiniLM on SRL + RTE + CoNLL NER, ``3 x --steps`` steps sampled uniformly over the tasks (so SRL
  gets about ``--steps`` of them), ``--subset-train`` train examples per task.

CPU (the figures in benchmarks/results/srl_profile-cpu.json: 20 / 60 steps, 1000 test predicates, about
12 minutes on 2 cores shared with five other jobs; on an idle CPU ``--steps 150`` and the whole test fit):
    .venv/bin/python benchmarks/srl_profile.py --steps 20 --subset-train 800 --subset-test 1000
Full size on a GPU (every train predicate, 5 epochs as configs/srl.yaml):
    .venv/bin/python benchmarks/srl_profile.py --steps 1250 --subset-train 0 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SRL_TASK = {
    "name": "srl",
    "type": "srl",
    "data": {
        "format": "conllu_srl",
        "path": "{data_dir}/up_english_ewt",
        "files": {"train": "en_ewt-up-dev.conllu", "test": "en_ewt-up-test.conllu"},
        "dev_from_train": 0.2,
        "dev_group": "sentence",
    },
    "metrics": ["srl_f1", "srl_precision", "srl_recall"],
    "max_length": 128,
}
MIX_TASKS = [
    {
        "name": "rte",
        "type": "pair_classification",
        "data": {"format": "glue", "task": "RTE", "path": "{data_dir}/glue/RTE"},
    },
    {
        "name": "conll",
        "type": "token_classification",
        "data": {"format": "conll", "path": "{data_dir}/conll2003"},
    },
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--steps", type=int, default=150, help="SRL steps (the mix trains 3 x as many)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--subset-train", type=int, default=2400, help="train examples per task (0 = all)")
    p.add_argument("--subset-test", type=int, default=0, help="test predicates scored (0 = all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "srl_profile")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "srl_profile-cpu.json")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    return p.parse_args()


def run_config(args: argparse.Namespace, tasks: list[dict], steps: int) -> Any:
    from mtfuse.config import RunConfig

    tasks = json.loads(json.dumps(tasks).replace("{data_dir}", args.data_dir))  # as config.load fills it
    return RunConfig.model_validate(
        {
            "data_dir": args.data_dir,
            "tasks": tasks,
            "subset": {"train": args.subset_train or None, "eval": 500, "seed": 0},
            "sampling": {"method": "uniform"},
            "train": {
                "seed": args.seed,
                "max_steps": steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "warmup_ratio": 0.1,
                "eval_every": 10**9,  # once, at the end
                "diagnostics": False,
                "tensorboard": False,
                "progress": False,
                "cpu": args.cpu,
            },
        }
    )


def test_metrics(run_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """SRL's metrics on the test file, from a trained run directory."""
    import torch

    from mtfuse import rundir
    from mtfuse.evaluate import evaluate_tasks
    from mtfuse.model import MultiTaskModel
    from mtfuse.tasks.prepare import prepare_tasks

    cfg = rundir.load_run_config(run_dir)
    subset = {"train": None, "eval": args.subset_test or None, "seed": 0}
    cfg = cfg.model_copy(
        update={
            "tasks": [t for t in cfg.tasks if t.name == "srl"],
            "subset": cfg.subset.model_copy(update=subset),
        }
    )
    model, tok = MultiTaskModel.load(run_dir / rundir.MODEL, require_tokenizer=True)
    tasks = prepare_tasks(cfg, tok, ["test"], vocabs={"srl": model.specs["srl"].labels})
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model.to(device)
    metrics, _ = evaluate_tasks(model, tasks, "test", 128, device, tok.pad_token_id or 0)
    return {k: round(v, 2) for k, v in metrics["srl"].items()}


def dependency_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The most frequent role of each dependency relation to the predicate, learned on the train predicates."""
    from mtfuse.metrics import METRICS
    from mtfuse.tasks.prepare import read_task_rows

    cfg = run_config(args, [SRL_TASK], 1)
    train, test = read_task_rows(cfg, "srl", "train"), read_task_rows(cfg, "srl", "test")
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in train:
        for j, (h, rel) in enumerate(zip(r["heads"], r["deprels"], strict=True)):
            if h == r["predicate"]:
                counts[rel][r["roles"][j]] += 1
    rule = {rel: c.most_common(1)[0][0] for rel, c in counts.items()}
    preds = [
        [
            rule.get(rel, "O") if h == r["predicate"] else "O"
            for h, rel in zip(r["heads"], r["deprels"], strict=True)
        ]
        for r in test
    ]
    gold = [r["roles"] for r in test]
    out = {m: round(METRICS.get(m)(preds, gold), 2) for m in ("srl_f1", "srl_precision", "srl_recall")}
    return {
        **out,
        "rule": dict(sorted((k, v) for k, v in rule.items() if v != "O")),
        "train_predicates": len(train),
    }


def train_and_score(args: argparse.Namespace, name: str, tasks: list[dict], steps: int) -> dict[str, Any]:
    from mtfuse.train import train

    run_dir = args.work_dir / name
    t0 = time.perf_counter()
    dev = train(run_config(args, tasks, steps), run_dir, overwrite=True)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test = test_metrics(run_dir, args)
    print(f"{name}: test {test} ({seconds:.0f}s train, {time.perf_counter() - t1:.0f}s test)", flush=True)
    return {
        "tasks": [t["name"] for t in tasks],
        "steps": steps,
        "train_seconds_with_setup": round(seconds, 1),
        "dev_metrics": json.loads(json.dumps(dev, default=float)).get("tasks", dev),
        "test_srl": test,
    }


def main() -> None:
    import torch

    from mtfuse.tasks.readers.conllu_srl import read_conllu_srl

    args = parse_args()
    up = Path(args.data_dir) / "up_english_ewt"
    files = {s: read_conllu_srl(up / f"en_ewt-up-{s}.conllu")[1] for s in ("dev", "test")}
    t0 = time.perf_counter()
    baseline = dependency_baseline(args)
    print(f"baseline: {baseline['srl_f1']} F1", flush=True)
    single = train_and_score(args, "single", [SRL_TASK], args.steps)
    mix = train_and_score(args, "mix", [SRL_TASK, *MIX_TASKS], 3 * args.steps)
    result = {
        "benchmark": "srl_profile",
        "command": "benchmarks/srl_profile.py " + " ".join(sys.argv[1:]),
        "device": "cuda"
        if torch.cuda.is_available() and not args.cpu
        else f"cpu ({platform.processor() or platform.machine()})",
        "model": "all-MiniLM-L6-v2 (packaged)",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "metric": "labelled argument P/R/F1 over (predicate, head word, role), micro, 0-100; V and senses not scored",
        "reader_counts": files,
        "baseline_dependency_rule": baseline,
        "baseline_all_O": {"srl_f1": 0.0, "srl_precision": 0.0, "srl_recall": 0.0},
        "single_task": single,
        "multi_task_srl_rte_conll": mix,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output} ({result['wall_seconds']}s)")


if __name__ == "__main__":
    main()
