"""Inference across tasks (issue 12 §2): ``forward_all`` vs one model per task, and ``Predictor`` vs the
Hugging Face ``pipeline`` and ``Trainer.predict``, each a ratio measured side by side in one run.

**(a) forward_all over T tasks vs T single-task models** (T = 1, 2, 4, 7 by default). One MultiTaskModel:
the packaged MiniLM encoder (real weights) with T classification heads (random, seeded: 2 / 3 / 5 labels,
pooler / mean / cls pooling in turn; random heads cost what trained ones cost). Against it, T single-task
models, each with its own copy of the encoder and one of the same heads. The same batches (SST-2 dev
sentences, tokenised once, padded to each batch's longest) go through ``forward_all(batch, tasks)`` and
through every single-task model in turn (model by model, as one would run T separate models), all in
``torch.inference_mode``, fp32. Figure: inputs per second (each input gets T predictions), the ratio of the
two (the goal: at least 0.9 T) and the largest logit difference between the arms (the same work).

**(b) Predictor vs pipeline and Trainer.predict**. A run directory with the MiniLM encoder and an SST-2 head
that reads the encoder's pooler (what ``BertForSequenceClassification`` reads). The head is a linear probe:
logistic regression fitted on the frozen encoder's pooler output of ``--probe-train`` SST-2 train sentences,
so its predictions have the margins of a trained classifier (a random head's near-zero logits would make
any precision check meaningless); the encoder is MiniLM's own. The same weights go into an
``AutoModelForSequenceClassification`` saved with its tokenizer. Then, on the same SST-2 dev sentences (text
in, a probability per label out; loading not timed):

- ``mtfuse``: ``Predictor(run_dir).predict_rows`` (what ``mtfuse predict`` runs on a file), its defaults
  (fp32, batch 64, length-sorted batches, inference mode); on a CPU with native bf16 also
  ``Predictor(run_dir, precision="bf16")``;
- ``pipeline``: ``pipeline("text-classification", model=dir)(texts, top_k=None)`` at its default batch size
  (1) and at the common one (``--batch-size``);
- ``Trainer.predict``: tokenise (``truncation=True``) + ``Trainer(model, args, processing_class=tokenizer)
  .predict`` + softmax, at the Trainer's default eval batch size (8) and at the common one.

Every arm's argmax and probabilities are compared with the fp32 reference (Trainer.predict at batch 8).
Arms alternate (the order rotates each repeat); figures are medians over ``--repeats``; wall time is the
headline, process CPU time (one torch thread: leaves out the time other jobs held the core) is beside it.

**(c) bf16 on trained runs** (``--agreement-runs RUN:TASK,...``): ``Predictor`` in fp32 and in bf16 on the
task's whole dev split: how many labels change, accuracy, speed. A linear probe is one model; whether bf16
keeps a model's labels depends on how many of its examples sit near a tie.

    .venv/bin/python benchmarks/inference_tasks.py --repeats 5     # ~15 min on 2 busy cores
    .venv/bin/python benchmarks/inference_tasks.py --quick         # a minute: T = 1, 2, few sentences
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SST2_CONFIG = ROOT / "configs" / "sst2.yaml"
GOAL_TASKS = 0.9  # forward_all over T tasks: at least 0.9 T x the throughput of T single-task models
GOAL_PREDICT = 1.5  # Predictor: at least 1.5 x the samples/s of pipeline and Trainer.predict
MT16 = "mtfuse Predictor (precision=bf16)"
GOAL = {True: "met", False: "NOT met", None: "n/a: the control"}
GOAL_AGREEMENT = 0.995  # a faster precision only where argmax agreement with fp32 stays at least this


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="default ../shared/data")
    p.add_argument("--model", default="default", help="'default' (packaged MiniLM) or a model directory")
    p.add_argument("--tasks", default="1,2,4,7", help="(a): the numbers of tasks T")
    p.add_argument("--task-sentences", type=int, default=256, help="(a): SST-2 dev sentences per arm")
    p.add_argument("--predict-sentences", type=int, default=0, help="(b): SST-2 dev sentences (0: all 872)")
    p.add_argument("--probe-train", type=int, default=1000, help="(b): SST-2 train sentences for the probe")
    p.add_argument("--batch-size", type=int, default=64, help="(a) batch; (b) the common batch size")
    p.add_argument("--repeats", type=int, default=3, help="alternating measurements; medians reported")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every arm")
    p.add_argument(
        "--precision",
        default=None,
        help="(b): Predictor precision (auto, fp32, bf16); default: the Predictor's own default",
    )
    p.add_argument("--parts", default="tasks,predict", help="which parts: tasks, predict (comma list)")
    p.add_argument(
        "--agreement-runs",
        default=None,
        help="(c): RUN:TASK,... trained runs whose dev labels fp32 and bf16 are compared on",
    )
    p.add_argument("--quick", action="store_true", help="a short run: T = 1, 2, few sentences, 1 repeat")
    p.add_argument(
        "--output", type=Path, default=None, help="default benchmarks/results/inference_tasks-cpu.json"
    )
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "inference_tasks")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.task_sentences, args.predict_sentences = "1,2", 16, 24
        args.probe_train, args.batch_size, args.repeats = 32, 16, 1
    return args


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result). With one torch thread the CPU time leaves out the time
    other jobs held the core (not the slow-down they cause through shared caches)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def sst2_rows(data_dir: str, split: str, n: int) -> list[dict[str, Any]]:
    """SST-2 rows read by mtfuse's GLUE reader; ``n`` > 0: a seeded subset (mtfuse's ``subset`` rows)."""
    from mtfuse.config import DataConfig
    from mtfuse.tasks.prepare import subset_rows
    from mtfuse.tasks.readers import READERS

    data = DataConfig(format="glue", task="SST-2", path=str(Path(data_dir) / "glue" / "SST-2"))
    rows = READERS.get("glue").read(data, split)
    return subset_rows(rows, n or None, 0, "sst2", split)


def rotate(arms: list[str], r: int) -> list[str]:
    k = r % len(arms)
    return arms[k:] + arms[:k]


# --------------------------------------------------------------------- (a) forward_all vs single-task models


def task_models(encoder: Any, T: int, poolings: list[str]) -> tuple[Any, list[tuple[str, Any]]]:
    """(one MultiTaskModel with T random heads, T single-task models: each an encoder copy + one head)."""
    import torch
    from torch import nn

    from mtfuse.model import HeadSpec, MultiTaskModel

    specs = {}
    for i in range(T):
        k = (2, 3, 5)[i % 3]
        specs[f"t{i}"] = HeadSpec(
            f"t{i}",
            "classification",
            "classification",
            k,
            poolings[i % len(poolings)],
            0.1,
            [str(j) for j in range(k)],
        )
    torch.manual_seed(T)
    multi = MultiTaskModel.build(encoder, specs).eval()
    singles = []
    for t, spec in specs.items():
        head = nn.ModuleDict({t: copy.deepcopy(multi.heads[t])})
        singles.append((t, MultiTaskModel(copy.deepcopy(encoder), head, {t: spec}).eval()))
    return multi, singles


def run_forward_all(multi: Any, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import torch

    with torch.inference_mode():
        return [multi.forward_all(b, multi.tasks) for b in batches]


def run_single_models(singles: list[tuple[str, Any]], batches: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Model by model, each over every batch (how one runs T separate models on the same inputs)."""
    import torch

    with torch.inference_mode():
        return {t: [m(t, b) for b in batches] for t, m in singles}


def measure_count(
    args: argparse.Namespace, encoder: Any, batches: list[dict[str, Any]], n: int, T: int, poolings: list[str]
) -> dict[str, Any]:
    multi, singles = task_models(encoder, T, poolings)
    run_forward_all(multi, batches[:1])  # warm-up, untimed
    run_single_models(singles, batches[:1])
    reps: list[dict[str, Any]] = []
    outs: dict[str, Any] = {}
    for r in range(args.repeats):
        rep: dict[str, Any] = {
            "order": rotate(["forward_all", "single"], r),
            "loadavg_1min": round(os.getloadavg()[0], 2),
        }
        for arm in rep["order"]:
            if arm == "forward_all":
                seconds, cpu, outs[arm] = timed(lambda: run_forward_all(multi, batches))
            else:
                seconds, cpu, outs[arm] = timed(lambda: run_single_models(singles, batches))
            rep[f"{arm}_seconds"] = round(seconds, 4)
            rep[f"{arm}_cpu_seconds"] = round(cpu, 4)
            rep[f"{arm}_samples_per_second"] = round(n / seconds, 2)
        rep["ratio"] = round(rep["single_seconds"] / rep["forward_all_seconds"], 3)
        rep["ratio_cpu_time"] = round(rep["single_cpu_seconds"] / rep["forward_all_cpu_seconds"], 3)
        reps.append(rep)
        print(
            f"  T={T} repeat {r + 1}: forward_all {rep['forward_all_samples_per_second']:.1f}, "
            f"{T} single models {rep['single_samples_per_second']:.1f} inputs/s, ratio {rep['ratio']:.2f}",
            flush=True,
        )
    diff = max(
        float((outs["forward_all"][k][t] - outs["single"][t][k]).abs().max())
        for t in multi.tasks
        for k in range(len(batches))
    )
    ratio = statistics.median(x["ratio"] for x in reps)
    return {
        "tasks": T,
        "forward_all_samples_per_second": statistics.median(
            x["forward_all_samples_per_second"] for x in reps
        ),
        "single_models_samples_per_second": statistics.median(x["single_samples_per_second"] for x in reps),
        "ratio": ratio,
        "ratio_over_tasks": round(ratio / T, 3),
        "ratio_cpu_time": statistics.median(x["ratio_cpu_time"] for x in reps),
        "goal_ratio": round(GOAL_TASKS * T, 2),
        "goal_met": ratio >= GOAL_TASKS * T if T > 1 else None,  # T = 1: the control (ratio ~1)
        "max_abs_logit_diff": diff,
        "outputs_agree": diff <= 1e-4,
        "parameters_forward_all": sum(p.numel() for p in multi.parameters()),
        "parameters_single_models": sum(p.numel() for _, m in singles for p in m.parameters()),
        "repeats": reps,
    }


def measure_tasks(args: argparse.Namespace, counts: list[int]) -> dict[str, Any]:
    from mtfuse.model import load_encoder_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    texts = [r["sentence"] for r in sst2_rows(args.data_dir, "dev", args.task_sentences)]
    B = args.batch_size
    batches = [
        dict(tokenizer(texts[i : i + B], truncation=True, max_length=128, padding=True, return_tensors="pt"))
        for i in range(0, len(texts), B)
    ]
    encoder = load_encoder_model(args.model).eval()
    poolings = ["pooler", "mean", "cls"] if getattr(encoder, "pooler", None) is not None else ["mean", "cls"]
    results = [measure_count(args, encoder, batches, len(texts), T, poolings) for T in counts]
    return {
        "settings": {
            "inputs": f"SST-2 dev, {len(texts)} sentences (the seeded subset mtfuse's subset.eval keeps)",
            "batch_size": B,
            "padded_lengths": [int(b["input_ids"].shape[1]) for b in batches],
            "heads": "random (seeded) classification heads, 2/3/5 labels, pooling "
            + "/".join(poolings)
            + " in turn",
            "encoder": "real weights (one copy for forward_all, one per task for the single-task models)",
            "mode": "torch.inference_mode, fp32, eval()",
            "single_models_order": "model by model, each over every batch",
        },
        "results": results,
    }


# ------------------------------------------------------------------------ (b) Predictor vs pipeline, Trainer


def build_run(args: argparse.Namespace, work: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(mtfuse run directory, HF model directory, probe facts): MiniLM + a linear-probe SST-2 head."""
    import torch

    from mtfuse import config as config_mod
    from mtfuse.model import HeadSpec, MultiTaskModel, load_encoder_model, load_tokenizer
    from mtfuse.rundir import CONFIG, MODEL

    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    encoder = load_encoder_model(args.model).eval()
    labels = ["0", "1"]  # mtfuse's label vocabulary for SST-2: the sorted train labels
    spec = HeadSpec("sst2", "classification", "classification", 2, "pooler", 0.1, labels)
    model = MultiTaskModel.build(encoder, {"sst2": spec}).eval()

    def pooled(rows: list[dict[str, Any]]) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for i in range(0, len(rows), 64):
                b = tokenizer(
                    [r["sentence"] for r in rows[i : i + 64]],
                    truncation=True,
                    max_length=128,
                    padding=True,
                    return_tensors="pt",
                )
                out.append(encoder(**b).pooler_output)
        return torch.cat(out)

    train = sst2_rows(args.data_dir, "train", args.probe_train)
    x = pooled(train)
    y = torch.tensor([labels.index(r["label"]) for r in train])
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    linear = torch.nn.Linear(x.shape[1], 2)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (
            torch.nn.functional.cross_entropy(linear((x - mean) / std), y)
            + 1e-3 * linear.weight.square().sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    head = model.heads["sst2"].classifier
    with torch.no_grad():  # fold the standardisation into the head: W (x - m) / s + b
        head.weight.copy_(linear.weight / std)
        head.bias.copy_(linear.bias - (linear.weight * mean / std).sum(1))
        train_acc = float((head(x).argmax(1) == y).float().mean())

    run = work / "mtfuse-run"
    cfg = config_mod.load(
        SST2_CONFIG, [f"data_dir={args.data_dir}", f"model.name_or_path={args.model}", "model.pooling=pooler"]
    )
    model.save(run / MODEL, tokenizer)
    (run / CONFIG).write_text(config_mod.dump(cfg), encoding="utf-8")

    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(
        str(run / MODEL),
        num_labels=2,
        id2label=dict(enumerate(labels)),
        label2id={k: i for i, k in enumerate(labels)},
    )
    with torch.no_grad():
        hf.classifier.weight.copy_(head.weight)
        hf.classifier.bias.copy_(head.bias)
    hf_dir = work / "hf-model"
    hf.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    return (
        run,
        hf_dir,
        {"probe_train_sentences": len(train), "probe_train_accuracy": round(100 * train_acc, 2)},
    )


def native_bf16() -> bool:
    try:
        from mtfuse.machine import native_cpu_bf16
    except ImportError:  # mtfuse before Predictor had a precision
        return False
    return native_cpu_bf16()


def measure_predict(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        pipeline,
    )

    from mtfuse.predict import Predictor

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    run, hf_dir, probe = build_run(args, work)
    rows = sst2_rows(args.data_dir, "dev", args.predict_sentences)
    texts = [r["sentence"] for r in rows]
    gold = np.array([int(r["label"]) for r in rows])
    labels = ["0", "1"]
    B = args.batch_size

    kwargs = {} if args.precision is None else {"precision": args.precision}
    predictor = Predictor(run, device="cpu", **kwargs)
    pipe = pipeline("text-classification", model=str(hf_dir), device="cpu")
    hf_tok = AutoTokenizer.from_pretrained(hf_dir)
    hf_model = AutoModelForSequenceClassification.from_pretrained(hf_dir)

    def trainer_for(batch: int) -> Trainer:
        targs = TrainingArguments(
            output_dir=str(work / "trainer"),
            per_device_eval_batch_size=batch,
            use_cpu=True,
            report_to=[],
            disable_tqdm=True,
        )
        return Trainer(model=hf_model, args=targs, processing_class=hf_tok)

    trainers = {8: trainer_for(8), B: trainer_for(B)}  # 8: TrainingArguments' default eval batch size

    def mtfuse_arm(predictor: Predictor) -> Callable[[list[str]], np.ndarray]:
        def go(texts: list[str]) -> np.ndarray:
            recs = predictor.predict_rows("sst2", [{"sentence": t} for t in texts])
            return np.array([[r["probs"][lab] for lab in labels] for r in recs])

        return go

    def pipeline_arm(batch: int | None) -> Callable[[list[str]], np.ndarray]:
        def go(texts: list[str]) -> np.ndarray:
            out = pipe(texts, top_k=None) if batch is None else pipe(texts, top_k=None, batch_size=batch)
            return np.array([[{d["label"]: d["score"] for d in o}[lab] for lab in labels] for o in out])

        return go

    def trainer_arm(batch: int) -> Callable[[list[str]], np.ndarray]:
        def go(texts: list[str]) -> np.ndarray:
            enc = hf_tok(texts, truncation=True)
            features = [{k: enc[k][i] for k in enc} for i in range(len(texts))]
            logits = trainers[batch].predict(features).predictions
            return torch.softmax(torch.from_numpy(logits).float(), -1).numpy()

        return go

    mt = "mtfuse Predictor (default)"
    arms: dict[str, tuple[str, int, Callable[[list[str]], np.ndarray]]] = {
        mt: ("mtfuse", predictor.batch_size, mtfuse_arm(predictor)),
        "pipeline (default batch 1)": ("pipeline", 1, pipeline_arm(None)),
        f"pipeline (batch {B})": ("pipeline", B, pipeline_arm(B)),
        "Trainer.predict (default batch 8)": ("trainer", 8, trainer_arm(8)),
        f"Trainer.predict (batch {B})": ("trainer", B, trainer_arm(B)),
    }
    precision = getattr(predictor, "precision", "fp32")  # mtfuse before precisions existed: fp32
    if precision != "bf16" and native_bf16():  # the same Predictor in bf16 beside it: its gain and changes
        bf16 = Predictor(run, device="cpu", precision="bf16")
        arms[MT16] = ("mtfuse", bf16.batch_size, mtfuse_arm(bf16))
    names = list(arms)
    reference = "Trainer.predict (default batch 8)"
    for name in names:  # warm-up on a few inputs, untimed
        arms[name][2](texts[:8])
    reps: list[dict[str, Any]] = []
    outputs: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        rep: dict[str, Any] = {"order": rotate(names, r), "loadavg_1min": round(os.getloadavg()[0], 2)}
        rep["cpu_samples_per_second"] = {}
        for name in rep["order"]:
            seconds, cpu, probs = timed(lambda fn=arms[name][2]: fn(texts))
            outputs[name] = probs
            rep[name] = round(len(texts) / seconds, 2)
            rep["cpu_samples_per_second"][name] = round(len(texts) / cpu, 2)
        reps.append(rep)
        print(
            f"  repeat {r + 1}: " + ", ".join(f"{n} {rep[n]:.1f}" for n in names) + " samples/s", flush=True
        )

    ref = outputs[reference]
    table = {}
    for name in names:
        tool, batch, _ = arms[name]
        p = outputs[name]
        table[name] = {
            "tool": tool,
            "batch_size": batch,
            "samples_per_second": statistics.median(x[name] for x in reps),
            "samples_per_cpu_second": statistics.median(x["cpu_samples_per_second"][name] for x in reps),
            "argmax_agreement_with_reference": float((p.argmax(1) == ref.argmax(1)).mean()),
            "max_abs_prob_diff_vs_reference": float(np.abs(p - ref).max()),
            "accuracy": round(100 * float((p.argmax(1) == gold).mean()), 2),
        }
    ratios = {
        name: round(statistics.median(x[mt] / x[name] for x in reps), 3) for name in names if name != mt
    }
    baselines = [n for n in names if arms[n][0] != "mtfuse"]
    # the bf16 Predictor against the same baselines (per repeat, then the median, as for the default)
    ratios_bf16 = (
        {n: round(statistics.median(x[MT16] / x[n] for x in reps), 3) for n in baselines}
        if MT16 in arms
        else None
    )
    ratios_cpu = {
        name: round(
            statistics.median(
                x["cpu_samples_per_second"][mt] / x["cpu_samples_per_second"][name] for x in reps
            ),
            3,
        )
        for name in names
        if name != mt
    }
    return {
        "settings": {
            "inputs": f"SST-2 dev, {len(texts)} sentences",
            "common_batch_size": B,
            "model": "MiniLM encoder (real weights) + a linear-probe SST-2 head on its pooler (see probe)",
            "probe": probe,
            "reference": reference + " (fp32)",
            "timed": "texts -> probabilities per label (tokenisation included; model loading not)",
            "mtfuse_precision": precision,
            "mtfuse_batch_size": predictor.batch_size,
        },
        "arms": table,
        "ratios_mtfuse_over": ratios,
        "ratios_cpu_time_mtfuse_over": ratios_cpu,
        "ratios_bf16_mtfuse_over": ratios_bf16,
        "goal_ratio": GOAL_PREDICT,
        "goal_met": all(ratios[n] >= GOAL_PREDICT for n in baselines),
        # the same work: every fp32 arm gives the reference's labels and probabilities (bf16 is reported apart)
        "outputs_agree": all(
            table[n]["argmax_agreement_with_reference"] >= GOAL_AGREEMENT
            and table[n]["max_abs_prob_diff_vs_reference"] <= 1e-3
            for n in names
            if n != MT16
        ),
        "repeats": reps,
    }


# -------------------------------------------------------------------------- (c) bf16 on trained runs' dev sets


def measure_agreement(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``Predictor`` fp32 vs bf16 on trained runs (``RUN:TASK``, a classification-like task): the labels
    that change, the largest probability change, accuracy and speed, on the task's whole dev split."""
    from mtfuse.predict import Predictor
    from mtfuse.tasks.readers import READERS

    out = []
    for item in args.agreement_runs.split(","):
        run, task = item.rsplit(":", 1)
        arms = {p: Predictor(run, device="cpu", precision=p) for p in ("fp32", "bf16")}
        t = arms["fp32"].task(task)
        rows = READERS.get(t.cfg.data.format).read(t.cfg.data, "dev")
        for p in arms.values():  # warm-up, untimed
            p.predict_rows(task, rows[:8])
        recs: dict[str, list[dict[str, Any]]] = {}
        reps = []
        for r in range(args.repeats):
            rep: dict[str, Any] = {"order": rotate(list(arms), r)}
            for name in rep["order"]:
                seconds, _, recs[name] = timed(lambda p=arms[name], t=task, x=rows: p.predict_rows(t, x))
                rep[name] = round(len(rows) / seconds, 2)
            reps.append(rep)
        a, b = recs["fp32"], recs["bf16"]
        gold = [str(row[t.label_field]) for row in rows]
        changed = sum(x["label"] != y["label"] for x, y in zip(a, b, strict=True))
        res = {
            "run": run,
            "task": task,
            "examples": len(rows),
            "labels_changed": changed,
            "label_agreement": round(1 - changed / len(rows), 5),
            "max_abs_prob_diff": max(
                abs(x["probs"][k] - y["probs"][k]) for x, y in zip(a, b, strict=True) for k in x["probs"]
            ),
            "accuracy_fp32": round(
                100 * sum(x["label"] == g for x, g in zip(a, gold, strict=True)) / len(rows), 2
            ),
            "accuracy_bf16": round(
                100 * sum(y["label"] == g for y, g in zip(b, gold, strict=True)) / len(rows), 2
            ),
            "bf16_speed_ratio": statistics.median(x["bf16"] / x["fp32"] for x in reps),
            "repeats": reps,
        }
        print(
            f"  {run} {task}: {changed} of {len(rows)} labels change in bf16 "
            f"({100 * res['label_agreement']:.2f}% kept), {res['bf16_speed_ratio']:.2f}x the speed",
            flush=True,
        )
        out.append(res)
    return out


# -------------------------------------------------------------------------------------------------- main


def predict_summary(b: dict[str, Any]) -> list[str]:
    """(b)'s lines of the summary, from its part of the results JSON."""
    lines = []
    for name, ratio in b["ratios_mtfuse_over"].items():
        if name != MT16:
            lines.append(f"Predictor / {name}: {ratio:.2f}x (goal 1.5x {GOAL[ratio >= GOAL_PREDICT]})")
    mt = b["arms"]["mtfuse Predictor (default)"]
    lines.append(
        f"Predictor ({b['settings']['mtfuse_precision']}): {mt['samples_per_second']:.1f} samples/s, argmax "
        f"agreement with fp32 {100 * mt['argmax_agreement_with_reference']:.2f}%"
    )
    if b.get("ratios_bf16_mtfuse_over"):
        bf = b["arms"][MT16]
        lines.append(
            f"Predictor (bf16): {bf['samples_per_second']:.1f} samples/s, "
            + ", ".join(f"{r:.2f}x {n}" for n, r in b["ratios_bf16_mtfuse_over"].items())
            + f"; argmax agreement with fp32 {100 * bf['argmax_agreement_with_reference']:.2f}%"
        )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from mtfuse.machine import cpu_name

    args = parse_args(argv)
    import torch
    import transformers

    import mtfuse
    from mtfuse.model import resolve_model_path

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the probe's "classifier MISSING" report and the like
    transformers.logging.disable_progress_bar()
    parts = set(args.parts.split(","))
    load0 = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "inference_tasks",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "benchmarks/inference_tasks.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": {
            "tag": "cpu",
            "name": cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "amx": bool(torch.cpu._is_amx_tile_supported()),
        },
        "versions": {
            "mtfuse": mtfuse.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "model": args.model if args.model != "default" else f"default ({resolve_model_path('default')})",
        "repeats": args.repeats,
    }
    summary = []
    if "tasks" in parts:
        print("(a) forward_all vs T single-task models", flush=True)
        a = measure_tasks(args, [int(x) for x in args.tasks.split(",")])
        result["tasks_vs_single_models"] = a
        for x in a["results"]:
            summary.append(
                f"forward_all T={x['tasks']}: {x['ratio']:.2f}x the throughput of {x['tasks']} single-task models "
                f"({x['ratio_over_tasks']:.2f} T; goal 0.9 T {GOAL[x['goal_met']]}), "
                f"max logit diff {x['max_abs_logit_diff']:.1e}"
            )
    if "predict" in parts:
        print("(b) Predictor vs pipeline and Trainer.predict", flush=True)
        b = measure_predict(args)
        result["predict"] = b
        summary += predict_summary(b)
    if args.agreement_runs:
        print("(c) Predictor bf16 vs fp32 on trained runs", flush=True)
        result["bf16_on_trained_runs"] = c = measure_agreement(args)
        for x in c:
            summary.append(
                f"bf16 on {Path(x['run']).name}/{x['task']}: {100 * x['label_agreement']:.2f}% of "
                f"{x['examples']} labels kept, accuracy {x['accuracy_fp32']} -> {x['accuracy_bf16']}, "
                f"{x['bf16_speed_ratio']:.2f}x"
            )
    result["loadavg_start_end"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    result["summary"] = summary
    out = args.output or ROOT / "benchmarks" / "results" / "inference_tasks-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("\n".join(summary))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
