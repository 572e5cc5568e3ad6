"""Generation profile: the packaged MiniLM warm-started as a BERT2BERT encoder-decoder (Rothe et al. 2020) on
seeded subsets of Multi30k en->de, SciTLDR and DailyDialog.

Systems, all scored on the same seeded dev subsets:
- trivial baselines: copy the source (Multi30k), the source's first sentence (SciTLDR), the most frequent
  train response (DailyDialog);
- one single-task model per task (``N`` steps each);
- one multi-task model on the three (``3N`` steps, proportional sampling: each task sees about as many
  examples as alone);
- the same with GLUE RTE (classification) in the mix (``4N`` steps).

Writes ``benchmarks/results/generation_profile-<size>-<device>.json``. Sizes (``--size``; default ``cpu``
without a GPU, ``full`` with one):

    .venv/bin/python benchmarks/generation_profile.py --size quick   # a check that it all runs: minutes
    .venv/bin/python benchmarks/generation_profile.py --size cpu     # the CPU profile: about an hour, 2 cores
    .venv/bin/python benchmarks/generation_profile.py --size full    # a GPU: 4,000 examples, 400 steps a task

The CPU profile is what fits an hour: a BERT2BERT step on MiniLM (two 22M-parameter stacks and a
30,522-word output layer, batch 16) takes seconds on 2 cores, so the ``full`` size (4,000 steps in all) would
take hours there.

A rerun keeps the systems that finished with the same config (their recorded wall time too).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "generation"

SIZES = {  # train / eval examples per task, steps per single-task run, decoding length
    "quick": {"train": 256, "eval": 32, "steps": 40, "new_tokens": 24, "batch": 16},
    "cpu": {"train": 2000, "eval": 100, "steps": 120, "new_tokens": 32, "batch": 16},
    "full": {"train": 4000, "eval": 200, "steps": 400, "new_tokens": 40, "batch": 16},
}


def tasks(data: Path, new_tokens: int) -> dict[str, dict[str, Any]]:
    gen = {"label_smoothing": 0.1, "max_new_tokens": new_tokens, "max_target_length": 48}
    return {
        "multi30k": {
            "name": "multi30k",
            "type": "generation",
            "data": {
                "format": "parallel",
                "path": str(data / "multi30k"),
                "files": {"train": "train", "dev": "val"},
                "suffixes": [".en.gz", ".de.gz"],
            },
            "metrics": ["bleu", "chrf", "gen_len"],
            "max_length": 48,
            "generation": gen,
        },
        "scitldr": {
            "name": "scitldr",
            "type": "generation",
            "data": {"format": "jsonl", "path": str(data / "scitldr" / "SciTLDR-A")},
            "text_fields": ["source"],
            "label_field": "target",
            "metrics": ["rouge1", "rouge2", "rougeL", "gen_len"],
            "max_length": 192,
            "generation": {**gen, "no_repeat_ngram_size": 3},
        },
        "dailydialog": {
            "name": "dailydialog",
            "type": "generation",
            "data": {"format": "dailydialog", "path": str(data / "dailydialog"), "context_turns": 2},
            "metrics": ["bleu", "distinct1", "distinct2", "gen_len"],
            "max_length": 96,
            "generation": {**gen, "no_repeat_ngram_size": 3},
        },
        "rte": {
            "name": "rte",
            "type": "pair_classification",
            "data": {"format": "glue", "path": str(data / "glue" / "RTE"), "task": "RTE"},
        },
    }


def config(task_list: list[dict[str, Any]], size: dict[str, int], steps: int, cache: Path) -> dict[str, Any]:
    return {
        "tasks": task_list,
        "cache_dir": str(cache),
        "subset": {"train": size["train"], "eval": size["eval"], "seed": 0},
        "train": {
            "max_steps": steps,
            "batch_size": size["batch"],
            "eval_batch_size": 32,
            "lr": 1e-4,
            "warmup_ratio": 0.1,
            "tensorboard": False,
            "progress": False,
            "diagnostics": False,
            "checkpoint_minutes": None,
            "log_every": max(1, steps // 4),
            "eval_every": steps,  # decoding is the slow part: score once, at the end
        },
    }


def train(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    from mtfuse.cli import main

    out = RUNS / name
    path = RUNS / f"{name}.yaml"
    timing = RUNS / f"{name}.seconds.json"
    text = yaml.safe_dump(cfg)
    # a rerun keeps a system that finished with this very config (the profile takes about an hour on a CPU)
    done = (out / "results.json").is_file() and path.is_file() and path.read_text() == text
    if not (done and timing.is_file()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        t0 = time.perf_counter()
        main(
            ["train", str(path), "--output", str(out), "--overwrite"]
            if out.exists()
            else ["train", str(path), "--output", str(out)]
        )
        timing.write_text(json.dumps({"wall_seconds": time.perf_counter() - t0}), encoding="utf-8")
    seconds = json.loads(timing.read_text())["wall_seconds"]
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    loss = {k: v for r in losses for k, v in r.items() if k.startswith("loss/")}
    return {"metrics": metrics["tasks"], "wall_seconds": round(seconds, 1), "last_loss": loss}


def baselines(task_cfgs: dict[str, dict[str, Any]], size: dict[str, int]) -> dict[str, dict[str, float]]:
    """Copy the source, the source's first sentence, the most frequent train response."""
    from collections import Counter

    from mtfuse.config import RunConfig
    from mtfuse.metrics import METRICS
    from mtfuse.tasks.prepare import read_task_rows, subset_rows

    out = {}
    for name in ("multi30k", "scitldr", "dailydialog"):
        tc = task_cfgs[name]
        cfg = RunConfig.model_validate({"tasks": [tc]})
        dev = subset_rows(read_task_rows(cfg, name, "dev"), size["eval"], 0, name, "dev")
        src_field, tgt_field = {
            "multi30k": ("source", "target"),
            "scitldr": ("source", "target"),
            "dailydialog": ("context", "response"),
        }[name]
        golds = [[g] if isinstance(g, str) else g for g in (r[tgt_field] for r in dev)]
        if name == "multi30k":
            how, preds = "copy the source", [r[src_field] for r in dev]
        elif name == "scitldr":
            how, preds = "first sentence", [r[src_field][0] for r in dev]
        else:
            train = read_task_rows(cfg, name, "train")
            top = Counter(r[tgt_field] for r in train).most_common(1)[0][0]
            how, preds = f"most frequent response ({top!r})", [top] * len(dev)
        out[name] = {"baseline": how, **{m: round(METRICS.get(m)(preds, golds), 2) for m in tc["metrics"]}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=list(SIZES), default=None, help="default: full on a GPU, else cpu")
    ap.add_argument("--quick", action="store_true", help="the same as --size quick")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    size_name = "quick" if args.quick else args.size or ("full" if torch.cuda.is_available() else "cpu")
    size = SIZES[size_name]
    torch.manual_seed(0)
    tc = tasks(args.data, size["new_tokens"])
    cache = RUNS / "cache"
    gen_names = ["multi30k", "scitldr", "dailydialog"]
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "size": size_name,
        "sizes": size,
        "baselines": baselines(tc, size),
        "systems": {},
    }
    for name in gen_names:
        result["systems"][f"single:{name}"] = train(
            f"single-{name}", config([tc[name]], size, size["steps"], cache)
        )
    result["systems"]["multi:3 generation"] = train(
        "multi", config([tc[n] for n in gen_names], size, 3 * size["steps"], cache)
    )
    result["systems"]["multi:3 generation + rte"] = train(
        "multi-rte", config([tc[n] for n in [*gen_names, "rte"]], size, 4 * size["steps"], cache)
    )
    device = "gpu" if torch.cuda.is_available() else "cpu"
    result.update(
        wall_seconds=round(time.perf_counter() - t0, 1),
        device=device,
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        model="packaged all-MiniLM-L6-v2 warm-started BERT2BERT (greedy decoding)",
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"generation_profile-{size_name}-{device}.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
