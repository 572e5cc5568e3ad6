"""How cost grows: time and memory as the number of tasks grows (1, 2, 4, 7) and as the encoder grows.

For each encoder (the packaged MiniLM, and a randomly initialised BERT-base-size encoder with MiniLM's
tokenizer, built and saved locally: nothing is downloaded) and each task count T (prefixes of a fixed order of
configs/glue.yaml's tasks: CoLA, SST-2, MRPC, RTE, WNLI, STS-B, CoNLL-2003), one fresh subprocess runs mtfuse's
own code paths on seeded subsets (``subset.train`` / ``subset.eval`` of every task, max length 128, batch 32):

* **data preparation**: ``prepare_tasks(cfg, tokenizer, ["train", "dev"])`` (read, check, subset, tokenise)
  with ``cache_dir`` set to a fresh, empty folder, so the tokenisation is measured (and the cache written); then
  the same call again, now served from that cache;
* **step time**: ``mtfuse.train.train`` on that config for ``warmup + steps`` optimizer steps, step mode
  ``sampled`` (one task's batch a step, proportional sampling: the defaults) or ``joint`` (a batch of every task
  a step); a global ``torch.optim`` step post-hook stamps the end of every optimizer step, so a step's time is
  the gap between consecutive stamps (batch collation, forward, backward, clipping, AdamW, schedule); evaluation,
  checkpoints and logging are switched off in between (``log.jsonl`` is written every step to learn which task
  each sampled step drew). Medians (and means) over the last ``steps`` gaps;
* **peak memory**: the process's peak resident set (``ru_maxrss``) at the end of training: interpreter,
  libraries, data, model, AdamW state and activations; the resident set after the imports is recorded beside it.
  On a GPU: the run's peak allocated CUDA memory (``results.json``);
* **evaluation**: the trained run's model read back (``MultiTaskModel.load``) and ``evaluate_tasks`` (what
  ``mtfuse evaluate`` and the training loop's dev evaluation run) on every task's dev subset, timed.

Ratios are taken against the T=1 row of the same encoder (and BERT-base over MiniLM at each T). The
measurements alternate (T ascending, then descending; the encoder order flips each time) and ``--repeats``
gives medians over repeats. The machine's load average is recorded before and after every measurement.

    .venv/bin/python benchmarks/scaling.py --warmup 2 --steps 10 --large-steps 5   # CPU, ~14 min
    .venv/bin/python benchmarks/scaling.py --quick                                 # a tiny check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _compact import compact_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "glue.yaml"
RESULTS_DIR = ROOT / "benchmarks" / "results"
# the fixed order: T tasks = the first T (single-sentence classification first, the token task last)
TASK_ORDER = ["cola", "sst2", "mrpc", "rte", "wnli", "stsb", "conll"]
NEVER = 10**9
# BERT-base's shape (Devlin et al. 2019); the vocabulary is MiniLM's tokenizer's
BERT_BASE = {
    "num_hidden_layers": 12,
    "hidden_size": 768,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
QUICK_LARGE = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="default ../shared/data")
    p.add_argument(
        "--model", default="default", help="the small encoder: 'default' (packaged MiniLM) or a dir"
    )
    p.add_argument("--encoders", default="small,large", help="small (--model), large (random BERT-base size)")
    p.add_argument("--tasks", default="1,2,4,7", help="task counts T (prefixes of the fixed order)")
    p.add_argument("--step-modes", default="sampled", help="comma list: sampled, joint")
    p.add_argument("--subset-train", type=int, default=256, help="train examples per task")
    p.add_argument("--subset-eval", type=int, default=128, help="dev examples per task")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--large-warmup", type=int, default=None, help="warm-up steps for the large encoder")
    p.add_argument("--large-steps", type=int, default=None, help="timed steps for the large encoder")
    p.add_argument("--repeats", type=int, default=1, help="measurements per cell (medians reported)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per measurement")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--quick", action="store_true", help="T=1,2, tiny subsets, 2 steps, a tiny 'large' encoder"
    )
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "scaling")
    p.add_argument("--output", type=Path, default=None, help="default benchmarks/results/scaling-<dev>.json")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per measurement before it is stopped")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.subset_train, args.subset_eval = "1,2", 32, 16
        args.warmup, args.steps, args.repeats = 1, 2, 1
        args.large_warmup = args.large_steps = None
    if args.warmup < 1:
        p.error("--warmup must be at least 1 (a step's time is the gap since the previous step)")
    return args


# ------------------------------------------------------------------------------------------------- worker


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(spec_path: Path) -> None:
    """One (encoder, T, step mode) measurement in this fresh process; writes spec['result']."""
    spec = json.loads(spec_path.read_text())
    load_start = os.getloadavg()
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from mtfuse import config as config_mod
    from mtfuse.evaluate import evaluate_tasks
    from mtfuse.model import MultiTaskModel, load_tokenizer
    from mtfuse.tasks.prepare import prepare_tasks
    from mtfuse.train import train

    torch.set_num_threads(spec["threads"])
    rss_imports = _rss_mb()
    cfg = config_mod.load(CONFIG, spec["overrides"])
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    tokenizer_s = time.perf_counter() - t0

    # ---- data preparation: an empty cache dir first (tokenised and written), then the same call cached
    t0 = time.perf_counter()
    tasks = prepare_tasks(cfg, tokenizer, ["train", "dev"])
    prep_cold = time.perf_counter() - t0
    data = {
        n: {
            "train": len(t.splits["train"]),
            "dev": len(t.splits["dev"]),
            "train_tokens_mean": round(float(t.splits["train"].lengths().mean()), 1),
        }
        for n, t in tasks.items()
    }
    del tasks
    t0 = time.perf_counter()
    cached = prepare_tasks(cfg, tokenizer, ["train", "dev"])
    prep_warm = time.perf_counter() - t0
    del cached
    peak_prep = _peak_rss_mb()  # the peak before training: imports, tokenizer, data (whole files read)

    # ---- training: a stamp at the end of every optimizer step (the inner torch optimizer: one per step)
    stamps: list[tuple[float, float, float]] = []  # (wall, process CPU, peak RSS so far) per step
    hook = register_optimizer_step_post_hook(
        lambda opt, a, k: stamps.append((time.perf_counter(), time.process_time(), _peak_rss_mb()))
    )
    run_dir = Path(spec["run_dir"])
    t0 = time.perf_counter()
    train(cfg, run_dir, overwrite=True)
    train_wall = time.perf_counter() - t0
    hook.remove()
    peak_train = _peak_rss_mb()
    W, S = spec["warmup"], spec["steps"]
    gaps = [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)]
    cpu_gaps = [b[1] - a[1] for a, b in zip(stamps, stamps[1:], strict=False)]
    timed, timed_cpu = gaps[W - 1 :], cpu_gaps[W - 1 :]  # gaps[i] is step i+2 (1-based): skip the warm-up
    if len(timed) != S:
        raise RuntimeError(f"{len(stamps)} optimizer steps stamped, expected {W + S}")
    # which task(s) each step trained on: log.jsonl has a record per step (log_every=1) with their losses
    step_tasks: dict[int, list[str]] = {}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "event" not in rec:
            step_tasks[rec["step"]] = sorted(k[5:] for k in rec if k.startswith("loss/"))
    timed_tasks = [step_tasks.get(W + 1 + i, []) for i in range(len(timed))]
    per_task: dict[str, list[float]] = {}
    if spec["step_mode"] == "sampled":
        for g, ts in zip(timed, timed_tasks, strict=True):
            for t in ts:
                per_task.setdefault(t, []).append(g)
    results = json.loads((run_dir / "results.json").read_text())

    # ---- evaluation: the trained model read back, every task's dev subset scored
    t0 = time.perf_counter()
    model, _ = MultiTaskModel.load(run_dir / "model")
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg.train.cpu else "cpu")
    model.to(device)
    load_s = time.perf_counter() - t0
    dev = prepare_tasks(cfg, tokenizer, ["dev"], vocabs={n: s.labels for n, s in model.specs.items()})
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    metrics, _ = evaluate_tasks(
        model, dev, "dev", cfg.train.eval_batch_size, device, tokenizer.pad_token_id or 0
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    eval_s, eval_cpu = time.perf_counter() - t0, time.process_time() - c0

    res = {
        "tasks": list(data),
        "data": data,
        "tokenizer_load_s": tokenizer_s,
        "prep_cold_s": prep_cold,
        "prep_cached_s": prep_warm,
        "step_ms": 1e3 * statistics.median(timed),
        "step_ms_mean": 1e3 * statistics.fmean(timed),
        "step_cpu_ms": 1e3 * statistics.median(timed_cpu),
        "step_ms_each": [round(1e3 * g, 1) for g in timed],
        "step_index_each": list(range(W + 1, W + 1 + len(timed))),  # 1-based: same seed, same batches
        "step_tasks_each": [",".join(t) for t in timed_tasks],
        # the peak resident set after every optimizer step (warm-up included): which task's batch raised it
        "peak_rss_each_step_mb": [round(st[2]) for st in stamps],
        "tasks_each_step": [",".join(step_tasks.get(i + 1, [])) for i in range(len(stamps))],
        "step_ms_per_task": {t: 1e3 * statistics.median(v) for t, v in sorted(per_task.items())},
        "steps_stamped": len(stamps),
        "train_wall_s": train_wall,
        "train_seconds_results_json": results["cost"]["train_seconds"],
        "rss_after_imports_mb": rss_imports,
        "peak_rss_after_prep_mb": peak_prep,
        "peak_rss_steps_mb": stamps[-1][2],  # at the last optimizer step: before the end-of-run work
        "peak_rss_mb": peak_train,
        "peak_memory_mb": results["cost"]["peak_memory_mb"],  # = peak RSS on the CPU, CUDA peak on a GPU
        "memory_device": results["cost"]["device"],
        "parameters": results["cost"]["parameters"],
        "encoder_parameters": results["cost"]["encoder_parameters"],
        "model_load_s": load_s,
        "eval_s": eval_s,
        "eval_cpu_s": eval_cpu,
        "eval_examples": sum(len(t.splits["dev"]) for t in dev.values()),
        "dev_metrics": metrics,
        "threads": torch.get_num_threads(),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
    }
    Path(spec["result"]).write_text(json.dumps(res, indent=1), encoding="utf-8")


# ------------------------------------------------------------------------------------------------- parent


def build_random_encoder(directory: Path, tokenizer_source: str, shape: dict[str, int]) -> Path:
    """A randomly initialised BERT of ``shape`` (seed 0) with ``tokenizer_source``'s tokenizer, saved once;
    a folder already holding the same shape and tokenizer is reused."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtfuse.model.encoder import resolve_model_path

    tok_path = resolve_model_path(tokenizer_source)
    stamp = {"shape": shape, "tokenizer": str(tok_path), "seed": 0}
    marker = directory / "scaling-encoder.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return directory
    if directory.exists():
        shutil.rmtree(directory)
    tokenizer = AutoTokenizer.from_pretrained(tok_path, use_fast=True)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    marker.write_text(json.dumps(stamp), encoding="utf-8")
    return directory


def overrides_for(
    args: argparse.Namespace, model: str, names: list[str], mode: str, steps: int, cache: Path
) -> list[str]:
    ov = [
        f"data_dir={args.data_dir}",
        f"cache_dir={cache}",
        f"only_tasks=[{','.join(names)}]",
        f"model.name_or_path={model}",
        f"subset.train={args.subset_train}",
        f"subset.eval={args.subset_eval}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={steps}",
        f"train.seed={args.seed}",
        f"train.step_mode={mode}",
        f"train.eval_every={NEVER}",  # no evaluation between steps (the end of the run still scores dev)
        f"train.checkpoint_every={NEVER}",
        "train.checkpoint_minutes=null",
        "train.keep_checkpoints=1",
        "train.log_every=1",  # which task each step drew
        "train.diagnostics=false",
        "train.tensorboard=false",
        "train.progress=false",
        *[f"tasks.{n}.max_length={args.max_length}" for n in names],
    ]
    if args.cpu:
        ov.append("train.cpu=true")
    return ov


def run_one(args: argparse.Namespace, enc: dict[str, Any], T: int, mode: str, rep: int) -> dict[str, Any]:
    warmup, steps = enc["warmup"], enc["steps"]
    names = TASK_ORDER[:T]
    tag = f"{mode}-{enc['key']}-T{T}-r{rep}"
    work = args.work_dir / tag
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cache = work / "cache"  # fresh and empty: the first prepare_tasks tokenises
    spec = {
        "overrides": overrides_for(args, enc["path"], names, mode, warmup + steps, cache),
        "run_dir": str(work / "run"),
        "result": str(work / "result.json"),
        "warmup": warmup,
        "steps": steps,
        "threads": args.threads,
        "step_mode": mode,
    }
    (work / "spec.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    src = str(ROOT / "src")  # this checkout's mtfuse first (a second worktree runs its own code)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(work / "spec.json")]
    row: dict[str, Any] = {"step_mode": mode, "encoder": enc["key"], "T": T, "repeat": rep}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {args.timeout} s"}
    row["wall_s"] = time.perf_counter() - t0
    out = work / "result.json"
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {**row, "error": f"exit {proc.returncode}: {' | '.join(tail)}"[:600]}
    row.update(json.loads(out.read_text()))
    shutil.rmtree(work / "run", ignore_errors=True)  # model + checkpoint: up to ~2 GB for BERT-base
    return row


MEASURES = ("prep_cold_s", "prep_cached_s", "step_ms", "step_ms_mean", "peak_memory_mb", "eval_s")


def summarize(
    runs: list[dict[str, Any]], encoders: list[dict[str, Any]], counts: list[int], modes: list[str]
) -> list[dict[str, Any]]:
    """One row per (step mode, encoder, T): medians over repeats, ratios to T=1 and large / small."""
    rows: list[dict[str, Any]] = []
    for mode in modes:
        for enc in encoders:
            for T in counts:
                ok = [r for r in runs if (r["step_mode"], r["encoder"], r["T"]) == (mode, enc["key"], T)]
                good = [r for r in ok if "error" not in r]
                row: dict[str, Any] = {
                    "step_mode": mode,
                    "encoder": enc["key"],
                    "T": T,
                    "tasks": TASK_ORDER[:T],
                }
                if not good:
                    row["error"] = ok[-1]["error"] if ok else "not run"
                    rows.append(row)
                    continue
                for k in MEASURES:
                    row[k] = statistics.median(r[k] for r in good)
                row["rss_after_imports_mb"] = statistics.median(r["rss_after_imports_mb"] for r in good)
                row["eval_examples"] = good[0]["eval_examples"]
                row["eval_examples_per_s"] = row["eval_examples"] / row["eval_s"]
                row["step_cpu_share"] = statistics.median(r["step_cpu_ms"] / r["step_ms"] for r in good)
                row["parameters"] = good[0]["parameters"]
                row["train_examples"] = sum(d["train"] for d in good[0]["data"].values())
                row["steps_timed"] = len(good[0]["step_ms_each"])
                row["repeats"] = len(good)
                rows.append(row)
    by = {(r["step_mode"], r["encoder"], r["T"]): r for r in rows}
    small = encoders[0]["key"]
    for r in rows:
        if "error" in r:
            continue
        base = by.get((r["step_mode"], r["encoder"], counts[0]))
        if base is not None and "error" not in base:
            r[f"vs_T{counts[0]}"] = {k: r[k] / base[k] for k in MEASURES if base[k] > 0}
        ref = by.get((r["step_mode"], small, r["T"]))
        if r["encoder"] != small and ref is not None and "error" not in ref:
            r[f"vs_{small}"] = {k: r[k] / ref[k] for k in MEASURES if ref[k] > 0}
            same = same_step_ratios(runs, r["step_mode"], r["encoder"], small, r["T"])
            if same:
                r[f"vs_{small}"]["step_same_batches"] = statistics.median(same)
    return rows


def same_step_ratios(runs: list[dict[str, Any]], mode: str, enc: str, small: str, T: int) -> list[float]:
    """Per repeat, the median over the timed steps both encoders ran (same seed: the same task and batch at
    a step index) of the per-step time ratio enc / small: the encoder's cost on identical batches, free of
    the task mix that a different set of sampled steps would bring."""
    out = []
    for a in runs:
        if (a["step_mode"], a["encoder"], a["T"]) != (mode, enc, T) or "error" in a:
            continue
        b = next((r for r in runs if (r["step_mode"], r["encoder"], r["T"], r["repeat"]) == (mode, small, T, a["repeat"])
                  and "error" not in r), None)  # fmt: skip
        if b is None:
            continue
        mine = dict(zip(a["step_index_each"], a["step_ms_each"], strict=True))
        theirs = dict(zip(b["step_index_each"], b["step_ms_each"], strict=True))
        ratios = [mine[i] / theirs[i] for i in mine if i in theirs and theirs[i] > 0]
        if ratios:
            out.append(statistics.median(ratios))
    return out


def _f(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def markdown(result: dict[str, Any]) -> str:
    c, encs = result["settings"], result["encoders"]
    t1 = f"vs_T{c['task_counts'][0]}"
    small = c["encoders"][0]
    lines = [
        f"### How cost grows ({result['device_name']})",
        "",
        f"Seeded subsets ({c['subset_train']} train / {c['subset_eval']} dev examples a task), max length "
        f"{c['max_length']}, batch {c['batch_size']}, fp32, {c['threads']} torch thread(s), one fresh process per "
        f"cell, {c['repeats']} repeat(s). Tasks: the first T of {', '.join(result['task_order'])}. "
        "Data prep: `prepare_tasks` (train + dev) into an empty cache dir (tokenised and written) / the same "
        "call again from that cache. Step: median ms of the timed optimizer steps (gaps between step stamps). "
        "Memory: peak resident set of the process (imports included). Eval: `evaluate_tasks` on every task's "
        f"dev subset. x T={c['task_counts'][0]}: the ratio to the same encoder's T={c['task_counts'][0]} row. "
        f"Load average during the run: {result['load_average']['min']:.1f} to {result['load_average']['max']:.1f}.",
        "",
    ]
    for mode in c["step_modes"]:
        lines += [
            f"Step mode `{mode}`:",
            "",
            "| encoder | T | data prep s (empty cache / cached) | x T1 | step ms (median / mean) | x T1 | "
            "peak RSS MB | x T1 | eval s (dev examples) | x T1 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in result["rows"]:
            if r["step_mode"] != mode:
                continue
            label = encs[r["encoder"]]["short"]
            if "error" in r:
                lines.append(f"| {label} | {r['T']} | failed: {r['error'][:120]} | | | | | | | |")
                continue
            v = r.get(t1, {})
            lines.append(
                f"| {label} | {r['T']} | {r['prep_cold_s']:.2f} / {r['prep_cached_s']:.2f} | "
                f"{_f(v.get('prep_cold_s'), '.2f')} | {r['step_ms']:.0f} / {r['step_ms_mean']:.0f} | "
                f"{_f(v.get('step_ms'), '.2f')} | {r['peak_memory_mb']:.0f} | {_f(v.get('peak_memory_mb'), '.2f')} | "
                f"{r['eval_s']:.2f} ({r['eval_examples']}) | {_f(v.get('eval_s'), '.2f')} |"
            )
        others = [e for e in c["encoders"] if e != small]
        for other in others:
            lines += [
                "",
                f"{encs[other]['short']} over {encs[small]['short']} at each T (step mode `{mode}`):",
                "",
                "| T | data prep | step (median) | step (mean) | step, same batches | peak RSS | eval |",
                "|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in result["rows"]:
                if r["step_mode"] != mode or r["encoder"] != other or f"vs_{small}" not in r:
                    continue
                v = r[f"vs_{small}"]
                lines.append(
                    f"| {r['T']} | {_f(v.get('prep_cold_s'), '.2f')} | {_f(v.get('step_ms'), '.2f')} | "
                    f"{_f(v.get('step_ms_mean'), '.2f')} | {_f(v.get('step_same_batches'), '.2f')} | "
                    f"{_f(v.get('peak_memory_mb'), '.2f')} | "
                    f"{_f(v.get('eval_s'), '.2f')} |"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from mtfuse.machine import device_tag

    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return
    import torch
    import transformers

    import mtfuse

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    tag, device_name = device_tag(args.cpu)
    counts = sorted({int(x) for x in args.tasks.split(",")})
    if not counts or counts[0] < 1 or counts[-1] > len(TASK_ORDER):
        raise SystemExit(f"--tasks: counts between 1 and {len(TASK_ORDER)}")
    modes = [m.strip() for m in args.step_modes.split(",") if m.strip()]
    if set(modes) - {"sampled", "joint"}:
        raise SystemExit("--step-modes: sampled and/or joint")
    keys = [k.strip() for k in args.encoders.split(",") if k.strip()]
    if set(keys) - {"small", "large"} or not keys:
        raise SystemExit("--encoders: small and/or large")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    shape = QUICK_LARGE if args.quick else BERT_BASE
    small_label = "packaged all-MiniLM-L6-v2" if args.model == "default" else str(args.model)
    encoders: list[dict[str, Any]] = []
    if "small" in keys:
        encoders.append({"key": "small", "path": args.model, "label": small_label,
                         "short": "MiniLM" if args.model == "default" else "small",
                         "warmup": args.warmup, "steps": args.steps})  # fmt: skip
    if "large" in keys:
        path = build_random_encoder(args.work_dir / f"random-bert-h{shape['hidden_size']}", args.model, shape)
        encoders.append({
            "key": "large", "path": str(path), "shape": shape,
            "label": f"random BERT ({shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, "
                     f"{shape['num_attention_heads']} heads, intermediate {shape['intermediate_size']}), "
                     "the small encoder's tokenizer",
            "short": "BERT-base (random)" if shape == BERT_BASE else "large (random)",
            "warmup": args.large_warmup or args.warmup, "steps": args.large_steps or args.steps,
        })  # fmt: skip

    runs: list[dict[str, Any]] = []
    loads = [load_start[0]]
    n_total = args.repeats * len(modes) * len(counts) * len(encoders)
    for rep in range(args.repeats):
        for mode in modes:
            order = counts if rep % 2 == 0 else counts[::-1]
            for i, T in enumerate(order):
                encs = encoders if (rep + i) % 2 == 0 else encoders[::-1]
                for enc in encs:
                    r = run_one(args, enc, T, mode, rep)
                    runs.append(r)
                    if "error" in r:
                        msg = r["error"]
                    else:
                        loads += [r["load_average_start"][0], r["load_average_end"][0]]
                        msg = (f"prep {r['prep_cold_s']:.1f} s, step {r['step_ms']:.0f} ms, "
                               f"peak {r['peak_memory_mb']:.0f} MB, eval {r['eval_s']:.1f} s, "
                               f"load {r['load_average_end'][0]:.1f}")  # fmt: skip
                    print(f"[{len(runs)}/{n_total}] {mode} {enc['short']} T={T}: {msg}", flush=True)
    rows = summarize(runs, encoders, counts, modes)
    load_end = os.getloadavg()
    loads.append(load_end[0])
    result = {
        "benchmark": "scaling",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": tag,
        "device_name": device_name,
        "command": " ".join(
            [".venv/bin/python", "benchmarks/scaling.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "settings": {
            "quick": args.quick,
            "task_counts": counts,
            "step_modes": modes,
            "encoders": [e["key"] for e in encoders],
            "subset_train": args.subset_train,
            "subset_eval": args.subset_eval,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "warmup_steps": {e["key"]: e["warmup"] for e in encoders},
            "timed_steps": {e["key"]: e["steps"] for e in encoders},
            "repeats": args.repeats,
            "threads": args.threads,
            "seed": args.seed,
            "precision": "fp32" if tag == "cpu" else "auto",
            "sampling": "proportional (configs/glue.yaml; equal subsets: uniform over tasks)",
        },
        "how": {
            "data_prep": "prepare_tasks(cfg, tokenizer, ['train', 'dev']) with cache_dir an empty folder (read, "
            "subset, tokenise, write the cache) = prep_cold_s; the same call again (cache hits) = prep_cached_s; "
            "the tokenizer's own loading is tokenizer_load_s",
            "step": "mtfuse.train.train; a torch.optim global step post-hook stamps each optimizer step; a "
            "step = the gap between consecutive stamps; the warm-up steps are dropped; median (and mean)",
            "memory": "ru_maxrss of the measurement's own process at the end of train() (CPU); CUDA peak "
            "allocated from results.json on a GPU",
            "eval": "MultiTaskModel.load of the trained run, then evaluate_tasks on every task's dev subset "
            "(eval_batch_size 128), timed",
        },
        "task_order": TASK_ORDER,
        "encoders": {e["key"]: {k: v for k, v in e.items() if k != "key"} for e in encoders},
        "rows": rows,
        "runs": runs,
        "load_average": {
            "start": list(load_start),
            "end": list(load_end),
            "min": min(loads),
            "max": max(loads),
            "note": "1-minute load averages at the start and end of every measurement",
        },  # fmt: skip
        "wall_seconds": time.perf_counter() - t_start,
        "versions": {
            "mtfuse": mtfuse.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    for e in result["encoders"].values():
        e["path"] = "default" if e["path"] == "default" else str(e["path"])
    out = args.output or RESULTS_DIR / f"scaling-{tag}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(compact_json(result), encoding="utf-8")
    md = markdown(result)
    out.with_suffix(".md").write_text(md, encoding="utf-8")
    print("\n" + md)
    print(f"wrote {out} and {out.with_suffix('.md')} ({result['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
