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
take hours there. Each system trains in its own ``mtfuse train`` process, ``--jobs`` of them at once (2 on a
CPU, one torch thread each: two small models use two cores better than one model uses two threads).

Runs go to ``benchmarks/runs/generation/<size>/``. A rerun keeps the systems that finished with the same
config (their recorded wall time too). Beside each metric the JSON gives how many different texts a system
decoded on the dev subset (``distinct_outputs``): a decoder that ignores its source decodes a few texts for
every input.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "generation"

LR = 1e-4  # every system's learning rate (AdamW, linear decay after 10% warm-up)

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


def config(
    task_list: list[dict[str, Any]], size: dict[str, int], steps: int, cache: Path, lr: float
) -> dict[str, Any]:
    return {
        "tasks": task_list,
        "cache_dir": str(cache),
        "subset": {"train": size["train"], "eval": size["eval"], "seed": 0},
        "train": {
            "max_steps": steps,
            "batch_size": size["batch"],
            "eval_batch_size": 32,
            "lr": lr,
            "warmup_ratio": 0.1,
            "tensorboard": False,
            "progress": False,
            "diagnostics": False,
            "checkpoint_minutes": None,
            "log_every": max(1, steps // 4),
            "eval_every": steps,  # decoding is the slow part: score once, at the end
        },
    }


def train(runs: Path, name: str, cfg: dict[str, Any], threads: int) -> dict[str, Any]:
    """Train one system into ``runs/name`` with ``mtfuse train`` in its own process (``threads`` torch
    threads), unless a run with this very config already finished (the profile takes about an hour on a CPU:
    reruns resume)."""
    out = runs / name
    path = runs / f"{name}.yaml"
    timing = runs / f"{name}.seconds.json"
    text = yaml.safe_dump(cfg)
    done = (out / "results.json").is_file() and path.is_file() and path.read_text() == text
    if not (done and timing.is_file()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        args = ["train", str(path), "--output", str(out), *(["--overwrite"] if out.exists() else [])]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        code = "import sys; from mtfuse.cli import main; main(sys.argv[1:])"
        t0 = time.perf_counter()
        log = runs / f"{name}.log"
        with log.open("w", encoding="utf-8") as fh:
            rc = subprocess.run(
                [sys.executable, "-c", code, *args], env=env, stdout=fh, stderr=subprocess.STDOUT
            )
        if rc.returncode:
            raise SystemExit(f"{name}: mtfuse train failed (exit {rc.returncode}); see {log}")
        timing.write_text(json.dumps({"wall_seconds": time.perf_counter() - t0}), encoding="utf-8")
    seconds = json.loads(timing.read_text())["wall_seconds"]
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    loss = {k: v for r in losses for k, v in r.items() if k.startswith("loss/")}
    return {
        "metrics": metrics["tasks"],
        "distinct_outputs": distinct_outputs(out),
        "trained_in_this_call": not (done and timing.is_file()),
        "wall_seconds": round(seconds, 1),
        "last_loss": loss,
    }


def distinct_outputs(run: Path) -> dict[str, int]:
    """How many different texts each generation task decoded on its dev subset: a model that ignores its
    source (a decoder that has learnt the target language but not yet to read the encoder) decodes one or
    a few texts for every input, whatever its BLEU or ROUGE."""
    out = {}
    for path in sorted((run / "predictions").glob("*.jsonl")):
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        if rows and isinstance(rows[0].get("text"), str):
            out[path.stem] = len({r["text"] for r in rows})
    return out


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
    ap.add_argument("--lr", type=float, default=LR, help=f"learning rate of every system (default {LR})")
    ap.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="systems trained at once, one process each (default: 2 on a CPU, 1 on a GPU)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads a job (default: cores / jobs)")
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
    systems = {  # (run folder, config); the dearest first, so that parallel jobs end together
        "multi:3 generation + rte": ("multi-rte", [*gen_names, "rte"], 4),
        "multi:3 generation": ("multi", gen_names, 3),
        **{f"single:{n}": (f"single-{n}", [n], 1) for n in ("scitldr", "dailydialog", "multi30k")},
    }
    jobs = max(1, min(args.jobs or (1 if torch.cuda.is_available() else 2), len(systems)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if args.threads is None else args.threads
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each job is its own `mtfuse train` process
        futures = {
            key: pool.submit(
                train,
                RUNS / size_name,  # one folder per size: a quick check never replaces the profile's runs
                folder,
                config([tc[n] for n in names], size, k * size["steps"], cache, args.lr),
                threads,
            )
            for key, (folder, names, k) in systems.items()
        }
        done = {key: f.result() for key, f in futures.items()}
    order = [f"single:{n}" for n in gen_names] + ["multi:3 generation", "multi:3 generation + rte"]
    result["systems"] = {key: done[key] for key in order}
    device = "gpu" if torch.cuda.is_available() else "cpu"
    result.update(
        wall_seconds=round(time.perf_counter() - t0, 1),
        device=device,
        jobs=jobs,
        torch_threads_per_job=threads,
        lr=args.lr,
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
