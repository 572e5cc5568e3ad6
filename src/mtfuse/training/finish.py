"""The end of a training run: the final model, dev metrics, predictions and the results record."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

import mtfuse
from mtfuse import rundir
from mtfuse.config import RunConfig
from mtfuse.evaluate import evaluate_tasks, records, with_average
from mtfuse.invocation import command_line
from mtfuse.model import MultiTaskModel
from mtfuse.model_card import write_card
from mtfuse.tasks.features import TaskData
from mtfuse.training.log import RunLog
from mtfuse.training.setup import Schedule, peak_memory_mb
from mtfuse.training.state import LoopState


def save_model_atomic(model: MultiTaskModel, tokenizer: Any, target: Path, hf_copies: bool = True) -> None:
    tmp = target.with_name(f".tmp-{target.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp, tokenizer, hf_copies=hf_copies)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def finish(
    cfg: RunConfig,
    out: Path,
    acc: Accelerator,
    core: MultiTaskModel,
    tokenizer: Any,
    tasks: dict[str, TaskData],
    state: LoopState,
    sched: Schedule,
    last_eval: dict[str, Any],
    log: RunLog,
) -> dict[str, Any]:
    """Write ``model/`` (the last or the best weights), ``metrics.json``, ``predictions/``, ``results.json`` and
    the model card (``README.md``)."""
    main = acc.is_main_process
    final_model = core
    if main:
        if cfg.train.select == "best" and (out / rundir.BEST_MODEL).is_dir():
            if (out / rundir.MODEL).exists():
                shutil.rmtree(out / rundir.MODEL)
            os.replace(out / rundir.BEST_MODEL, out / rundir.MODEL)
            final_model, _ = MultiTaskModel.load(out / rundir.MODEL)
            final_model.to(acc.device)
        else:
            save_model_atomic(core, tokenizer, out / rundir.MODEL, cfg.model.hf_copies)
    acc.wait_for_everyone()
    if not main:
        return {}
    # every evaluation is fp32 (training.evaluation): the last one, when it scored these weights, is final
    if final_model is core and last_eval.get("step") == state.step:
        metrics, outputs = last_eval["metrics"], last_eval["outputs"]
    else:
        pad_id = tokenizer.pad_token_id or 0
        metrics, outputs = evaluate_tasks(
            final_model, tasks, "dev", cfg.train.eval_batch_size, acc.device, pad_id
        )
    final = with_average(metrics)
    final["examples"] = {n: t.examples("dev") for n, t in tasks.items()}
    for n, (p, pr) in outputs.items():
        rundir.write_jsonl(
            rundir.inside(out / rundir.PREDICTIONS, f"{n}.jsonl"),
            records(tasks[n], p, pr, tasks[n].gold["dev"]),
        )
    rundir.write_json(out / rundir.METRICS, {"split": "dev", **final})
    train_sizes = {n: t.examples("train") for n, t in tasks.items()}
    record = results_record(cfg, final, state, core, acc, sched.total, train_sizes)
    rundir.write_json(out / rundir.RESULTS, record)
    write_card(out)
    log.write({"step": state.step, "event": "end", "average": final["average"]})
    log.close()
    rundir.drop_previous(out)
    return final


def results_record(
    cfg: RunConfig,
    final: dict[str, Any],
    state: LoopState,
    model: MultiTaskModel,
    acc: Accelerator,
    total: int,
    train_sizes: dict[str, int] | None = None,
) -> dict[str, Any]:
    import transformers

    enc_params = sum(p.numel() for p in model.encoder.parameters())
    all_params = sum(p.numel() for p in model.parameters())
    init = cfg.model.init_from
    # a single task started from another run (MT-DNN fine-tuning) is not a single-task baseline: compare
    # normalises to those, so it gets a kind of its own
    kind = "multi-task" if len(cfg.tasks) > 1 else "fine-tuned" if init else "single-task"
    return {
        "kind": kind,
        **({"init_from": init} if init else {}),
        "tasks": [t.name for t in cfg.tasks],
        "command": command_line(),
        "metrics": final,
        "examples": {"train": train_sizes or {}, "dev": final.get("examples", {})},
        "seed": cfg.train.seed,
        "steps": state.step,
        "total_steps": total,
        "stopped_early": state.stopped_early,
        "best_step": state.best_step,
        "cost": {
            "parameters": all_params,
            "encoder_parameters": enc_params,
            "head_parameters": all_params - enc_params,
            "train_seconds": round(state.train_seconds, 2),
            "train_samples_per_second": round(state.samples_seen / max(state.train_seconds, 1e-9), 2),
            "peak_memory_mb": round(peak_memory_mb(acc.device), 1),
            "device": str(acc.device),
            "processes": acc.num_processes,
            "precision": acc.mixed_precision,
        },
        "versions": {
            "mtfuse": mtfuse.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "config": cfg.model_dump(mode="json"),
    }
