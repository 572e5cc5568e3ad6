"""Accelerator, optimizer, schedule and model set-up for the training loop."""

from __future__ import annotations

import contextlib
import math
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType

from mtfuse.batching import BatchStream
from mtfuse.config import RunConfig
from mtfuse.errors import MtfuseError
from mtfuse.machine import native_cpu_bf16
from mtfuse.model import HeadSpec, MultiTaskModel
from mtfuse.tasks.features import TaskData

CPU_DDP = " On CPUs, train data-parallel instead: accelerate launch --multi_gpu --num_processes N"


def train_precision(cfg: RunConfig) -> str:
    """``train.precision`` as accelerate takes it: ``auto`` is bf16 where bf16 is native, else ``no`` (fp32).

    Native: a GPU that supports bf16, or a CPU with AVX512-BF16 / AMX (``machine.native_cpu_bf16``). On such a
    CPU bf16 autocast trained MiniLM 1.4x faster than fp32 (benchmarks/results/trainer_throughput-cpu-bf16.json)
    with dev scores within seed noise of fp32's on the quality profile, seeds 1-3
    (benchmarks/results/quality_profile-bf16.md). A CPU without it would emulate bf16, slower than fp32.
    """
    precision = cfg.train.precision
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and not cfg.train.cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if native_cpu_bf16() else "no"


def make_accelerator(cfg: RunConfig) -> Accelerator:
    precision = train_precision(cfg)
    # Only one task's head runs in a sampled step, so DDP must allow unused parameters.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Launched as several processes (torchrun / accelerate launch set WORLD_SIZE) on a machine without CUDA:
    # accelerate joins them in a gloo group only when told cpu=True; otherwise each would run alone as
    # "process 0 of 1", all writing the same run directory.
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = cfg.train.cpu or (launched and not torch.cuda.is_available())
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")  # launch --use_fsdp
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        # a second train() in one process (the Python API, a notebook) at another precision: accelerate keeps
        # the first's and would refuse. Only the precision state goes; the process group (PartialState) stays.
        AcceleratorState._reset_state()
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


def cpu_bf16_attention(model: torch.nn.Module, acc: Accelerator) -> list[str]:
    """Switch the encoder's (and a decoder's) attention from SDPA to eager when training in bf16 on a CPU.

    Why: where SDPA takes torch's CPU flash-attention kernel (no attention dropout: a model without it, or
    ``model.eval()`` steps), that kernel is slow backwards in bf16. On MiniLM (batch 32, 40 tokens, 2 cores,
    dropout off) one attention backward took 41 ms in bf16 against 4.6 ms in fp32, and a whole bf16 step 0.65 s
    with SDPA against 0.32 s eager (fp32: 0.57 s). With attention dropout SDPA falls back to its math path, the
    same matmuls as eager, and both take the same time. Same maths; outputs agree to float rounding. Nothing is
    saved: ``config.json`` does not keep the attention implementation. Returns the names of the modules switched.
    """
    from transformers import PreTrainedModel

    if acc.device.type != "cpu" or acc.mixed_precision != "bf16":
        return []
    switched = []
    for name, m in model.named_modules():
        if isinstance(m, PreTrainedModel) and getattr(m.config, "_attn_implementation", None) == "sdpa":
            m.set_attn_implementation("eager")  # sets its sub-configs too (an encoder-decoder's halves)
            switched.append(name)
    return switched


def _set_attention(model: torch.nn.Module, names: list[str], implementation: str) -> None:
    for name, m in model.named_modules():
        if name in names:
            m.set_attn_implementation(implementation)


def restore_attention(model: torch.nn.Module, switched: list[str]) -> None:
    """Undo :func:`cpu_bf16_attention` (the modules it named go back to SDPA): the final fp32 evaluation then
    computes exactly what `mtfuse evaluate` does on the saved model."""
    _set_attention(model, switched, "sdpa")


@contextlib.contextmanager
def sdpa_attention(model: torch.nn.Module, switched: list[str]) -> Iterator[None]:
    """SDPA for the duration (an evaluation: no backward), then eager again for the training steps."""
    restore_attention(model, switched)
    try:
        yield
    finally:
        _set_attention(model, switched, "eager")


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
