"""The step variants of the loop, as plain functions over a :class:`StepContext`.

* sampled / joint loss-level: the task losses are combined by the weighting into one loss, back-propagated;
* joint gradient-level: the matrix of per-task gradients of the shared parameters is aggregated by the
  method into one update; each head (and other task-own parameter) gets its own task's gradient.

Method-specific work sits behind the weighting's hooks (``before_backward``: GradNorm's layer gradients;
``after_step``: FAMO's second forward), so no method name appears here or in the loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from mtfuse.gradients import cosine_matrix, streamed_task_gradients, task_gradient_matrix, write_gradient
from mtfuse.model import MultiTaskModel
from mtfuse.plan import STEP_JOINT_GRADIENT
from mtfuse.tasks.features import TaskData, collate
from mtfuse.training.setup import shared_named_parameters
from mtfuse.weighting.base import Weighting

Batches = dict[str, dict[str, torch.Tensor]]


@dataclass
class StepContext:
    acc: Accelerator
    model: torch.nn.Module  # as prepared by accelerate (DDP-wrapped with several processes)
    core: MultiTaskModel  # the unwrapped model
    tasks: dict[str, TaskData]
    weighting: Weighting
    shared_named: list[tuple[str, torch.nn.Parameter]]  # parameters every task uses (that train)
    own: list[torch.nn.Parameter]  # heads and other task-own parameters
    pad_id: int
    gradient_buffer: torch.Tensor | None = None  # G's storage, kept between gradient-level steps
    eager_attention: list[str] = field(default_factory=list)  # setup.cpu_bf16_attention's switched modules

    @classmethod
    def build(
        cls,
        acc: Accelerator,
        model: torch.nn.Module,
        tasks: dict[str, TaskData],
        weighting: Weighting,
        pad_id: int,
    ) -> StepContext:
        core: MultiTaskModel = acc.unwrap_model(model)
        shared_named = [(n, p) for n, p in shared_named_parameters(core) if p.requires_grad]
        ids = {id(p) for _, p in shared_named}
        own = [p for p in core.parameters() if p.requires_grad and id(p) not in ids]
        return cls(acc, model, core, tasks, weighting, shared_named, own, pad_id)

    @property
    def shared(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.shared_named]

    @property
    def world(self) -> int:
        return self.acc.num_processes


def task_losses(
    ctx: StepContext, forward: Callable[..., torch.Tensor], batches: Batches
) -> dict[str, torch.Tensor]:
    with ctx.acc.autocast():
        return {n: task_loss(ctx, n, forward(n, b), b["labels"]) for n, b in batches.items()}


def task_loss(ctx: StepContext, name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task type's loss, with what its head adds (a regression head's target scale)."""
    return loss_of(ctx.tasks[name], ctx.core.heads[name], logits, labels)


def loss_of(
    task: TaskData, head: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """A task's loss: its type's, with what its head adds (a regression head's target scale) and its config's
    options (an intent_slots task's slot_weight)."""
    extra = task.type.loss_options(task.cfg)
    return task.type.loss(logits, labels, **head.loss_kwargs(), **extra)


def loss_level_backward(
    ctx: StepContext, batches: Batches, step: int, accum: int, sync: bool
) -> dict[str, torch.Tensor]:
    """Sampled and joint loss-level steps: one combined loss, back-propagated (gradients reduced by DDP)."""
    quiet = ctx.acc.no_sync(ctx.model) if not sync and ctx.world > 1 else contextlib.nullcontext()
    with quiet:
        losses = task_losses(ctx, ctx.model, batches)
        loss = ctx.weighting.combine(losses, step)
        ctx.weighting.before_backward(losses, ctx.shared_named)
        ctx.acc.backward(loss / accum)
    return losses


def gradient_level_backward(
    ctx: StepContext, batches: Batches, step: int, accum: int, sync: bool
) -> dict[str, torch.Tensor]:
    """Joint gradient-level steps: aggregate the task gradients of the shared parameters into one update.

    The unwrapped model runs (DDP would reduce each backward); the matrix is reduced here by hand. Each task's
    forward runs just before its backward, which frees its activations: the step holds ``G`` and one task's
    activations, not every task's (the same dropout draws, in the same task order, as forwarding all first)."""
    order, shared = ctx.weighting.tasks, ctx.shared
    losses: dict[str, torch.Tensor] = {}

    def one_at_a_time() -> Iterator[torch.Tensor]:
        for t in order:
            losses[t] = task_losses(ctx, ctx.core, {t: batches[t]})[t]
            yield losses[t]

    G, own_grads = streamed_task_gradients(
        one_at_a_time(), len(order), shared, ctx.own, out=ctx.gradient_buffer
    )
    ctx.gradient_buffer = G
    if ctx.world > 1:
        G = ctx.acc.reduce(G, reduction="mean")  # every process aggregates the same matrix
    loss_vec = torch.stack([losses[t].detach().float() for t in order])
    write_gradient(shared, ctx.weighting.aggregate(G, loss_vec, step))
    for p, g in zip(ctx.own, own_grads, strict=True):
        p.grad = None if g is None else (ctx.acc.reduce(g, reduction="mean") if ctx.world > 1 else g)
    return {t: v.detach() for t, v in losses.items()}


def backward_for(step_kind: str) -> Callable[[StepContext, Batches, int, int, bool], dict[str, torch.Tensor]]:
    return gradient_level_backward if step_kind == STEP_JOINT_GRADIENT else loss_level_backward


def conflict_diagnostics(ctx: StepContext, batch_size: int) -> dict[str, Any]:
    """Cosine similarity of task gradients on the shared parameters, one fixed train batch per task."""
    core, was = ctx.core, ctx.core.training
    core.eval()  # no dropout: consumes no random numbers, so resumed runs stay identical
    losses = []
    for name, task in ctx.tasks.items():
        enc = task.splits["train"]
        batch = collate(enc, np.arange(min(batch_size, len(enc))), ctx.pad_id, task.type)
        batch = {k: v.to(ctx.acc.device) for k, v in batch.items()}
        with ctx.acc.autocast():
            losses.append(task_loss(ctx, name, core(name, batch), batch["labels"]))
    cos = cosine_matrix(task_gradient_matrix(losses, ctx.shared))
    core.zero_grad(set_to_none=True)
    core.train(was)
    return {"tasks": list(ctx.tasks), "cosine": [[round(float(x), 4) for x in row] for row in cos]}
