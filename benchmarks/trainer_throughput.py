"""Training throughput: mtfuse's loop vs the Hugging Face ``Trainer``, same model, data, batches and recipe.

Both train the packaged MiniLM (mtfuse: ``MultiTaskModel`` with one pooler classification head;
Trainer: ``AutoModelForSequenceClassification``, the same architecture) on a seeded SST-2 train subset read
with mtfuse's GLUE reader, with the same batch size, max length, AdamW + linear schedule with warm-up,
gradient clipping 1.0, dynamic padding, the same precision (``--precision``: bf16 autocast on a GPU / fp32 on
the CPU by default; ``defaults`` gives each tool its own default instead: mtfuse's ``auto``, bf16 where the
hardware has it natively, CPUs with AVX512-BF16 / AMX included, against the Trainer's fp32), for the same
number of steps, in one process.
The Trainer reads the examples in exactly the batches mtfuse draws (its ``BatchStream`` order, fed through a
sequential sampler and ``DataCollatorWithPadding``), so both pad the same batches to the same lengths.

Timing (the first ``--warmup`` steps of each are excluded):

* Both are timed the same way, from the end of optimizer step W to the end of step W+S, CUDA synchronised at
  both ends, so the window holds S whole steps: fetching + collating each batch, the host-to-device copy,
  forward, backward, clipping, the optimizer step and whatever else each loop does per step.
  * mtfuse: one run of W+S steps; the stamps come from the loop's per-step hook point
    (``checkpoint.fault_point``, called at the end of every step). Also reported: results.json's whole-run
    ``train_samples_per_second`` (optimizer-step time only, warm-up steps included).
  * Trainer: a ``TrainerCallback``'s ``on_step_end``. Also reported: the sum of ``on_step_begin`` ->
    ``on_step_end`` (CPU only; excludes data loading) and the Trainer's own ``train_samples_per_second``
    (whole ``train()`` call, set-up and warm-up steps included).
  * Before the repeats, a throw-away W-step run of each warms the process up.
  * Until 2026-12-02 mtfuse was timed as ``train_seconds(W+S) - train_seconds(W)`` of two runs, which adds
    the noise of two runs. On 4 alternating repeats with 1 timer for both, fp32 MiniLM ran at 1.03 x the
    Trainer, where the two-run difference had given 0.95 on 5 repeats.
* Also: samples per second of process CPU time (``time.process_time``, all threads) over the same window. On
  a machine shared with other jobs this is no steadier than wall time (OpenMP threads spin while they wait,
  and a VM loses time to steal), so the wall-time ratio is the headline.

The ratio printed is mtfuse / Trainer of the steady-state figures. Also reported: model FLOPs per second of
each tool over the timed steps and, on a GPU with a known dense bf16 peak, the model FLOPs utilisation (MFU,
PaLM's convention: ``benchmarks/_flops.py``, counted from the architecture and each batch's padded length).
``--random-encoder bert-base`` trains a randomly initialised BERT-base-size encoder instead of MiniLM.

    .venv/bin/python benchmarks/trainer_throughput.py --steps 20 --repeats 3           # CPU
    .venv/bin/python benchmarks/trainer_throughput.py --steps 20 --repeats 3 --precision defaults \
        --output benchmarks/results/trainer_throughput-cpu-defaults.json                 # each tool's defaults
    .venv/bin/python benchmarks/trainer_throughput.py --steps 300 --warmup 20 --repeats 3   # GPU
    .venv/bin/python benchmarks/trainer_throughput.py --steps 100 --warmup 10 --repeats 3 --batch-size 128 \
        --random-encoder bert-base --output benchmarks/results/trainer_throughput-cuda-bert-base.json  # GPU, MFU
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _flops import encoder_dims, peak_flops, train_flops  # noqa: E402

CONFIG = ROOT / "configs" / "glue.yaml"
NEVER = 10**9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="default ../shared/data")
    p.add_argument(
        "--model", default="default", help="'default' (packaged MiniLM) or a local model directory"
    )
    p.add_argument(
        "--random-encoder",
        choices=["bert-base"],
        default=None,
        help="instead of --model: a randomly initialised BERT-base-size encoder (12 layers, hidden 768, 110 M "
        "parameters) with the packaged MiniLM's tokenizer, saved once under --work-dir",
    )
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument(
        "--subset", type=int, default=None, help="SST-2 train examples (default: (warmup+steps) x batch)"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--repeats", type=int, default=1, help="measure both this many times, alternating; report medians"
    )
    p.add_argument(
        "--hf-optim",
        default="adamw_torch_fused",
        help="Trainer optim (adamw_torch_fused: the Trainer's default and mtfuse's fused torch AdamW)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "defaults"],
        default="auto",
        help="both tools' precision (bf16: autocast); auto: bf16 on a GPU that has it, else fp32; defaults: "
        "each tool's own default (mtfuse train.precision=auto: bf16 on a GPU or CPU with native bf16; the "
        "Trainer: fp32)",
    )
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    p.add_argument(
        "--output", type=Path, default=None, help="default benchmarks/results/trainer_throughput-<dev>.json"
    )
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "trainer_throughput")
    return p.parse_args(argv)


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


# -------------------------------------------------------------------------------------------------- data


def sst2_batches(
    args: argparse.Namespace, tokenizer: Any
) -> tuple[list[dict[str, Any]], list[list[int]], int]:
    """(examples in mtfuse's batch order, the batches as index lists, subset size) for W+S steps."""
    import numpy as np

    from mtfuse.batching import BatchStream
    from mtfuse.config import DataConfig
    from mtfuse.tasks.prepare import subset_rows
    from mtfuse.tasks.readers import READERS

    data = DataConfig(format="glue", task="SST-2", path=str(Path(args.data_dir) / "glue" / "SST-2"))
    all_rows = READERS.get("glue").read(data, "train")
    # mtfuse's label vocabulary: the sorted labels of the full train split
    labels = sorted({r["label"] for r in all_rows})
    n = args.subset or (args.warmup + args.steps) * args.batch_size
    # the rows mtfuse's subset.train=n keeps (subset.seed 0)
    rows = subset_rows(all_rows, n, 0, "sst2", "train")
    enc = tokenizer([r["sentence"] for r in rows], truncation=True, max_length=args.max_length)
    examples = [
        {
            "input_ids": enc["input_ids"][i],
            "token_type_ids": enc["token_type_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "labels": labels.index(r["label"]),
        }
        for i, r in enumerate(rows)
    ]
    lengths = np.array([len(e["input_ids"]) for e in examples])
    # mtfuse's batch order; a single task's stream has seed train.seed + 0
    stream = BatchStream(lengths, args.batch_size, args.seed, False)
    batches = [stream.next().tolist() for _ in range(args.warmup + args.steps)]
    ordered = [examples[i] for b in batches for i in b]
    return ordered, [[len(examples[i]["input_ids"]) for i in b] for b in batches], len(rows)


# ------------------------------------------------------------------------------------------------ mtfuse


def mtfuse_run(
    args: argparse.Namespace, steps: int, subset: int, warmup_lr: int, name: str, precision: str
) -> dict[str, Any]:
    from mtfuse import config as config_mod
    from mtfuse.train import train

    overrides = [
        f"data_dir={args.data_dir}",
        f"model.name_or_path={args.model}",
        "only_tasks=[sst2]",
        f"tasks.sst2.max_length={args.max_length}",
        f"subset.train={subset}",
        "subset.eval=64",  # the final evaluation is not timed; keep it short
        f"train.max_steps={steps}",
        f"train.warmup_steps={warmup_lr}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        f"train.seed={args.seed}",
        f"train.eval_every={NEVER}",
        "train.tensorboard=false",
        "train.progress=false",
        "train.keep_checkpoints=1",
        f"train.precision={precision}",
    ]
    if args.cpu:
        overrides.append("train.cpu=true")
    cfg = config_mod.load(CONFIG, overrides)
    out = args.work_dir / name
    cpu0 = time.process_time()
    train(cfg, out, overwrite=True)
    rec = json.loads((out / "results.json").read_text())
    rec["process_cpu_seconds"] = time.process_time() - cpu0  # the whole train() call, all threads
    return rec


def measure_mtfuse(
    args: argparse.Namespace, subset: int, warmup_lr: int, precision: str, cuda: bool
) -> dict[str, Any]:
    """One run of W+S steps, timed from the end of step W to the end of step W+S, as the Trainer's callback
    times it. The stamps come from the loop's per-step hook point (``checkpoint.fault_point``, called once
    at the end of every optimizer step, after the step's work and before any logging or saving)."""
    import mtfuse.train as loop

    W, S, B = args.warmup, args.steps, args.batch_size
    stamps: dict[int, tuple[float, float]] = {}
    real = loop.fault_point

    def stamp(name: str) -> None:
        real(name)
        if name in (f"step:{W}", f"step:{W + S}"):
            _sync(cuda)
            stamps[int(name[5:])] = (time.perf_counter(), time.process_time())

    loop.fault_point = stamp
    try:
        full = mtfuse_run(args, W + S, subset, warmup_lr, "mtfuse-ws", precision)
    finally:
        loop.fault_point = real
    seconds = stamps[W + S][0] - stamps[W][0]
    cpu = stamps[W + S][1] - stamps[W][1]
    return {
        "samples_per_second": round(S * B / seconds, 2),
        "timed_seconds": round(seconds, 3),
        "samples_per_cpu_second": round(S * B / cpu, 3),
        "whole_run_samples_per_second": full["cost"]["train_samples_per_second"],
        "precision": full["cost"]["precision"],
        "device": full["cost"]["device"],
    }


# ------------------------------------------------------------------------------------------- HF Trainer


def measure_trainer(
    args: argparse.Namespace,
    ordered: list[dict[str, Any]],
    warmup_lr: int,
    cuda: bool,
    bf16: bool,
    warm_up_only: bool = False,
) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from mtfuse.model import resolve_model_path

    W, S, B = args.warmup, args.steps, args.batch_size
    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.start: float | None = None
            self.end: float | None = None
            self.begin = 0.0
            self.compute = 0.0
            self.cpu_start = self.cpu_end = 0.0

        def on_step_begin(self, args_, state, control, **kw):
            self.begin = time.perf_counter()

        def on_step_end(self, args_, state, control, **kw):
            now = time.perf_counter()
            if state.global_step > W:
                self.compute += now - self.begin
            if state.global_step in (W, W + S):
                _sync(cuda)
                now = time.perf_counter()
                if state.global_step == W:
                    self.start, self.cpu_start = now, time.process_time()
                else:
                    self.end, self.cpu_end = now, time.process_time()

    padded: list[int] = []
    base_collator = DataCollatorWithPadding(tokenizer)

    def collator(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = base_collator(features)
        padded.append(int(batch["input_ids"].shape[1]))
        return batch

    targs = TrainingArguments(
        output_dir=str(args.work_dir / "hf-trainer"),
        per_device_train_batch_size=B,
        max_steps=W if warm_up_only else W + S,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=warmup_lr,
        weight_decay=0.01,
        max_grad_norm=1.0,
        optim=args.hf_optim,
        bf16=bf16,
        use_cpu=not cuda,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",  # the dataset is already in mtfuse's batch order
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=args.seed,
    )
    timer = StepTimer()
    trainer = Trainer(
        model=model, args=targs, train_dataset=ordered, data_collator=collator, callbacks=[timer]
    )
    out = trainer.train()
    if warm_up_only:
        return {}
    assert timer.start is not None and timer.end is not None
    seconds = timer.end - timer.start
    return {
        "samples_per_second": round(S * B / seconds, 2),
        "timed_seconds": round(seconds, 3),
        "samples_per_cpu_second": round(S * B / (timer.cpu_end - timer.cpu_start), 3),
        "step_begin_end_samples_per_second": round(S * B / timer.compute, 2) if not cuda else None,
        "trainer_metrics_train_samples_per_second": out.metrics.get("train_samples_per_second"),
        "padded_lengths": padded[: W + S],
    }


# ------------------------------------------------------------------------------------------ models, FLOPs


def random_encoder(kind: str, work: Path, seed: int) -> Path:
    """A randomly initialised encoder of a standard size with the packaged MiniLM's tokenizer (made once)."""
    import torch
    from transformers import BertConfig, BertModel

    from mtfuse.model import load_tokenizer

    out = work / f"{kind}-random"
    if (out / "config.json").is_file():
        return out
    assert kind == "bert-base"
    tokenizer = load_tokenizer("default")
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def model_dims(model: str) -> dict[str, int]:
    """``_flops.encoder_dims`` of the sequence classifier both tools train (built on the meta device: no
    weights are allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from mtfuse.model import resolve_model_path

    cfg = AutoConfig.from_pretrained(resolve_model_path(model), num_labels=2)
    with torch.device("meta"):
        return encoder_dims(AutoModelForSequenceClassification.from_config(cfg))


# -------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    import transformers

    import mtfuse
    from mtfuse.model import load_tokenizer

    cuda = torch.cuda.is_available() and not args.cpu
    bf16 = args.precision == "bf16" or (args.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    # the Trainer runs bf16 iff ``bf16``; mtfuse too, except under "defaults", where it resolves its own auto
    mt_precision = "auto" if args.precision == "defaults" else "bf16" if bf16 else "no"
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    tag = "cuda" if cuda else "cpu"
    W, S, B = args.warmup, args.steps, args.batch_size
    warmup_lr = int(0.1 * (W + S))  # the recipe's 10% warm-up, as a step count both understand the same way

    if args.random_encoder:
        args.model = str(random_encoder(args.random_encoder, args.work_dir, args.seed))
    tokenizer = load_tokenizer(args.model)
    ordered, lengths, subset = sst2_batches(args, tokenizer)
    expected = [max(b) for b in lengths]
    # model FLOPs of the timed steps (benchmarks/_flops.py: PaLM's MFU convention), the same for both tools
    flops = train_flops(model_dims(args.model), [len(b) for b in lengths[W:]], expected[W:])
    peak = peak_flops(device) if cuda and bf16 else None  # dense bf16 peaks only; none for a CPU

    print(f"warming up mtfuse and the Trainer ({W} steps each)...", flush=True)
    mtfuse_run(args, W, subset, warmup_lr, "mtfuse-warmup", mt_precision)
    measure_trainer(args, ordered, warmup_lr, cuda, bf16, warm_up_only=True)
    reps: list[dict[str, Any]] = []
    for r in range(args.repeats):
        order = ("mtfuse", "trainer") if r % 2 == 0 else ("trainer", "mtfuse")
        rep: dict[str, Any] = {}
        for which in order:
            print(f"repeat {r + 1}/{args.repeats}: {which}...", flush=True)
            if which == "mtfuse":
                rep["mtfuse"] = measure_mtfuse(args, subset, warmup_lr, mt_precision, cuda)
            else:
                rep["trainer"] = measure_trainer(args, ordered, warmup_lr, cuda, bf16)
        rep["trainer"]["same_batches_as_mtfuse"] = rep["trainer"].pop("padded_lengths") == expected
        mt, hf = rep["mtfuse"], rep["trainer"]
        rep["ratio"] = round(mt["samples_per_second"] / hf["samples_per_second"], 3)
        rep["ratio_cpu_time"] = round(mt["samples_per_cpu_second"] / hf["samples_per_cpu_second"], 3)
        reps.append(rep)
        print(
            f"  mtfuse {mt['samples_per_second']:.1f}, Trainer {hf['samples_per_second']:.1f} samples/s, "
            f"ratio {rep['ratio']:.2f} (per process CPU second: {rep['ratio_cpu_time']:.2f})",
            flush=True,
        )

    m = statistics.median(x["mtfuse"]["samples_per_second"] for x in reps)
    h = statistics.median(x["trainer"]["samples_per_second"] for x in reps)
    ratio = statistics.median(x["ratio"] for x in reps)
    ratio_cpu = statistics.median(x["ratio_cpu_time"] for x in reps)
    t_mt = statistics.median(x["mtfuse"]["timed_seconds"] for x in reps)
    t_hf = statistics.median(x["trainer"]["timed_seconds"] for x in reps)
    line = (
        f"mtfuse {m:.1f} samples/s, HF Trainer {h:.1f} samples/s, ratio {ratio:.2f} "
        f"({tag}, mtfuse {reps[0]['mtfuse']['precision']}, Trainer {'bf16' if bf16 else 'fp32'}, {S} steps, "
        f"batch {B}"
        f"{f', median of {args.repeats}' if args.repeats > 1 else ''}); model TFLOP/s mtfuse "
        f"{flops / t_mt / 1e12:.3f}, Trainer {flops / t_hf / 1e12:.3f}"
        + (f", MFU {flops / t_mt / peak:.1%} / {flops / t_hf / peak:.1%}" if peak else "")
    )
    result = {
        "benchmark": "trainer_throughput",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "benchmarks/trainer_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": {"tag": tag, "name": device, "torch_threads": torch.get_num_threads()},
        "versions": {
            "mtfuse": mtfuse.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "settings": {
            "model": args.model,
            "random_encoder": args.random_encoder,
            "task": "SST-2 train subset",
            "subset": subset,
            "batch_size": B,
            "max_length": args.max_length,
            "lr": args.lr,
            "lr_warmup_steps": warmup_lr,
            "schedule": "linear",
            "weight_decay": 0.01,
            "max_grad_norm": 1.0,
            "precision": {"mtfuse": reps[0]["mtfuse"]["precision"], "trainer": "bf16" if bf16 else "fp32"},
            "precision_option": args.precision,
            "timed_steps": S,
            "untimed_warmup_steps": W,
            "hf_optim": args.hf_optim,
            "mean_padded_length_timed": round(sum(expected[W:]) / max(1, S), 1),
            "mtfuse_timing": "loop's step-end hook: end of step W -> end of step W+S, incl. batch fetch + collate",
            "trainer_timing": "callback: on_step_end(W) -> on_step_end(W+S), incl. batch fetch + collate",
        },
        "mtfuse_samples_per_second": m,
        "trainer_samples_per_second": h,
        # model FLOPs per second over the timed steps (median of the repeats' timed seconds) and MFU = that over
        # the device's dense bf16 peak (null without a known peak: a CPU, fp32)
        "model_flops_timed_steps": flops,
        "peak_flops_per_second": peak,
        "mtfuse_model_tflops_per_second": round(flops / t_mt / 1e12, 4),
        "trainer_model_tflops_per_second": round(flops / t_hf / 1e12, 4),
        "mtfuse_mfu": round(flops / t_mt / peak, 4) if peak else None,
        "trainer_mfu": round(flops / t_hf / peak, 4) if peak else None,
        "ratio_mtfuse_over_trainer": ratio,
        # samples per second of process CPU time (all threads); mtfuse's from the difference of two whole
        # train() calls. Not steadier than wall time on a shared machine (OpenMP spin-waits, VM steal).
        "ratio_cpu_time_mtfuse_over_trainer": ratio_cpu,
        "repeats": reps,
        "summary": line,
    }
    out = args.output or ROOT / "benchmarks" / "results" / f"trainer_throughput-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(line)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
