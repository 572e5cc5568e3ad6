"""Accelerator, optimizer, schedule and model set-up for the training loop."""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType

from mtfuse.batching import BatchStream
from mtfuse.config import RunConfig
from mtfuse.errors import MtfuseError
from mtfuse.model import HeadSpec, MultiTaskModel
from mtfuse.tasks.features import TaskData

CPU_DDP = " On CPUs, train data-parallel instead: accelerate launch --multi_gpu --num_processes N"


def make_accelerator(cfg: RunConfig) -> Accelerator:
    precision = cfg.train.precision
    if precision == "auto":
        gpu = torch.cuda.is_available() and not cfg.train.cpu
        precision = "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"
    # Only one task's head runs in a sampled step, so DDP must allow unused parameters.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Launched as several processes (torchrun / accelerate launch set WORLD_SIZE) on a machine without CUDA:
    # accelerate joins them in a gloo group only when told cpu=True; otherwise each would run alone as
    # "process 0 of 1", all writing the same run directory.
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = cfg.train.cpu or (launched and not torch.cuda.is_available())
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")  # launch --use_fsdp
    try:
        acc = Accelerator(cpu=cpu, mixed_precision=precision, kwargs_handlers=[ddp])
    except RuntimeError as err:
        if not fsdp:
            raise
        # accelerate's FSDP plugin refuses a machine without an accelerator (CUDA, XPU, ...)
        raise MtfuseError(
            f"FSDP (accelerate launch --use_fsdp) needs a GPU or another accelerator: {err}{CPU_DDP}"
        ) from None
    if fsdp and acc.distributed_type != DistributedType.FSDP:
        # accelerate 1.x quietly runs DDP (or one process) when it cannot shard, e.g. on CPUs: never silently
        raise MtfuseError(
            f"FSDP was asked for (accelerate launch --use_fsdp), but accelerate would run "
            f"{acc.distributed_type.value} here: it shards only on GPUs or other accelerators.{CPU_DDP}"
        )
    return acc


def head_dropout(cfg: RunConfig, encoder: Any) -> float:
    if cfg.model.head_dropout is not None:
        return cfg.model.head_dropout
    return float(getattr(encoder.config, "hidden_dropout_prob", 0.1))


def head_specs(
    tasks: dict[str, TaskData],
    cfg: RunConfig,
    dropout: float,
    encoder_config: Any = None,
    tokenizer: Any = None,
) -> dict[str, HeadSpec]:
    return {
        name: HeadSpec(
            **{
                "task": name,
                "task_type": t.type.name,
                "head": t.type.head,
                "num_outputs": t.type.num_outputs(t.labels),
                "pooling": t.cfg.pooling or cfg.model.pooling or "pooler",
                "dropout": dropout,
                "labels": t.labels,
                "layer": t.cfg.layer,
                **t.type.head_options(t.gold["train"]),
                # fields that need the encoder / tokenizer (a decoder's config, its vocabulary size; a type
                # may also name another head, as an encoder-decoder checkpoint's own decoder)
                **t.type.head_config(t, encoder_config, tokenizer, cfg.model),
            }
        )
        for name, t in tasks.items()
    }


def build_optimizer(
    model: torch.nn.Module, cfg: RunConfig, extra: list[torch.nn.Parameter] | None = None
) -> torch.optim.Optimizer:
    """AdamW / SGD with no weight decay on biases and LayerNorm weights (as the HF Trainer).

    ``extra``: learnable parameters of the loss weighting (e.g. uncertainty weighting), never decayed.
    """
    decay, no_decay = [], list(extra or [])
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in n or "layer_norm" in n else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)
    # fused: one kernel for all parameters (on 2 CPU cores the MiniLM step's optimizer part is ~5x faster)
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.adam_betas, eps=t.adam_eps, fused=True)


def lr_lambda(kind: str, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return f


@dataclass(frozen=True)
class Schedule:
    """How many optimizer steps, and when to log, evaluate and checkpoint."""

    total: int
    steps_per_epoch: int
    eval_every: int
    checkpoint_every: int
    warmup: int

    @classmethod
    def of(cls, cfg: RunConfig, streams: dict[str, BatchStream]) -> Schedule:
        micro_per_epoch = sum(s.batches_per_epoch() for s in streams.values())
        per_epoch = max(1, math.ceil(micro_per_epoch / cfg.train.grad_accum))
        total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))
        eval_every = cfg.train.eval_every or per_epoch
        t = cfg.train
        warmup = t.warmup_steps if t.warmup_steps is not None else int(t.warmup_ratio * total)
        return cls(total, per_epoch, eval_every, t.checkpoint_every or eval_every, warmup)


def make_streams(cfg: RunConfig, tasks: dict[str, TaskData]) -> dict[str, BatchStream]:
    """One seeded, resumable batch order per task."""
    return {
        n: BatchStream(
            t.splits["train"].lengths(), cfg.train.batch_size, cfg.train.seed + i, cfg.train.group_by_length
        )
        for i, (n, t) in enumerate(tasks.items())
    }


def shared_named_parameters(model: MultiTaskModel) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters every task uses (the sharing architecture decides; the encoder under hard sharing)."""
    fn = getattr(model, "shared_named_parameters", None)
    if fn is not None:
        return list(fn())
    return [(f"encoder.{n}", p) for n, p in model.encoder.named_parameters()]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux: the process's peak resident memory
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
