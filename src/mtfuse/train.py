"""THE training loop: explicit, top to bottom, on `accelerate` (one process, or many: `accelerate launch`).

Each optimizer step in step mode 'sampled': the sampler picks a task for each micro-batch, that task's batch (its
share of the global batch on this process) goes through the encoder and the task's head, the weighting turns
the task loss into the loss to back-propagate, gradients are clipped, the optimizer and schedule step. Every
``eval_every`` steps all tasks are scored on dev; every ``checkpoint_every`` steps (or ``checkpoint_minutes``)
a resumable checkpoint is written. Single-task training is the same loop with one task.

Step mode 'joint' takes a batch of every task (or of k sampled tasks) in each step. Loss-level weightings
combine the task losses into one loss; gradient-level methods (PCGrad, MGDA, UPGrad...) get the matrix of
per-task gradients of the shared parameters and return the update direction (``training/steps.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from mtfuse import rundir
from mtfuse.checkpoint import fault_point
from mtfuse.config import RunConfig, dump
from mtfuse.errors import MtfuseError
from mtfuse.model import MultiTaskModel, load_encoder, load_tokenizer
from mtfuse.model.encoder import load_encoder_config
from mtfuse.model.initial import save_initial
from mtfuse.model.lstm import is_lstm_config
from mtfuse.plan import check_data, check_encoder, make_plan
from mtfuse.tasks.features import collate
from mtfuse.tasks.prepare import prepare_tasks
from mtfuse.training.evaluation import evaluate_and_log
from mtfuse.training.finish import finish
from mtfuse.training.init_from import init_specs, load_init_encoder, load_init_heads, read_init_source
from mtfuse.training.log import RunLog, check_trackers, trackers_of
from mtfuse.training.setup import (
    Schedule,
    build_optimizer,
    cpu_bf16_attention,
    head_dropout,
    head_specs,
    lr_lambda,
    make_accelerator,
    make_streams,
    restore_attention,
)
from mtfuse.training.signals import Interrupted, stop_on_signals
from mtfuse.training.state import Resumable
from mtfuse.training.steps import StepContext, backward_for, task_losses


def train(
    cfg: RunConfig, output_dir: str | os.PathLike[str], resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Train every task of ``cfg`` into ``output_dir``; return the final dev metrics."""
    plan = make_plan(cfg)  # every check that needs no model or data has run
    cfg, out = plan.cfg, Path(output_dir)
    acc = make_accelerator(cfg)
    main = acc.is_main_process
    if main:
        rundir.check_output(out, "train", overwrite, resume)  # refuse now, before any slow work
        check_trackers(trackers_of(cfg.train))
    if cfg.model.init_from and Path(cfg.model.init_from).resolve() == out.resolve():
        raise MtfuseError(f"model.init_from: {out} is the output directory itself; choose another --output")
    with rundir.lock(out) if main else contextlib.nullcontext():
        try:
            return _train(plan, out, acc, resume, overwrite)
        except Interrupted:
            raise  # the new run is resumable; an old run it replaces stays in .previous-run until it ends
        except Exception:
            if main and overwrite:
                rundir.restore_previous(out)  # the new run failed: the old one comes back
            raise


def _train(plan: Any, out: Path, acc: Any, resume: bool, overwrite: bool) -> dict[str, Any]:
    cfg, tr = plan.cfg, plan.cfg.train
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    # ---- data and model (every check happens before anything is written) -----------------------------
    set_seed(tr.seed)
    source = read_init_source(cfg.model.init_from) if cfg.model.init_from else None
    if source is None:
        encoder, tokenizer = load_encoder(cfg.model.name_or_path, cfg.model.lstm)
    else:  # another run's encoder (model.init_from); name_or_path still gives the tokenizer
        tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.lstm)
        pretrained = load_encoder_config(cfg.model.name_or_path, cfg.model.lstm)
        encoder = load_init_encoder(source, pretrained, tokenizer)
    check_encoder(cfg, encoder.config)
    tasks = prepare_tasks(cfg, tokenizer, ["train", "dev"])
    check_data(plan, {n: t.labels for n, t in tasks.items()})
    set_seed(tr.seed)  # heads start from the same weights whatever the data preparation did
    specs = head_specs(tasks, cfg, head_dropout(cfg, encoder), encoder.config, tokenizer)
    if source is not None:
        specs = init_specs(specs, source)  # a head that cannot be reused stops the run here
    model = MultiTaskModel.build(encoder, specs, cfg.model.sharing)
    switched_attention = cpu_bf16_attention(model, acc)
    init_heads = load_init_heads(model, source) if source is not None else []
    pad_id = tokenizer.pad_token_id or 0
    if tr.batch_size < world:
        raise MtfuseError(
            f"train.batch_size={tr.batch_size} is smaller than the number of processes ({world})"
        )
    streams = make_streams(cfg, tasks)
    sched = Schedule.of(cfg, streams)
    sizes = {n: len(t.splits["train"]) for n, t in tasks.items()}
    sampler = plan.sampler(
        sizes, plan.sampler_params, tr.seed, sched.steps_per_epoch, sched.total / sched.steps_per_epoch
    )
    weighting = plan.weighting(
        list(tasks), plan.weighting_params, {n: t.cfg.loss_weight for n, t in tasks.items()}
    )
    optimizer = build_optimizer(model, cfg, weighting.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(tr.scheduler, sched.warmup, sched.total)
    )
    model, optimizer = acc.prepare(model, optimizer)  # the scheduler is stepped by hand: once per step
    # prepare() wraps forward in the training precision's autocast; the steps enter it themselves
    # (steps.task_losses), and evaluations stay fp32, as `mtfuse evaluate` scores the saved model
    acc.unwrap_model(model, keep_fp32_wrapper=False)
    ctx = StepContext.build(acc, model, tasks, weighting, pad_id)
    ctx.eager_attention = switched_attention
    if weighting.is_gradient_method and not ctx.shared:
        raise MtfuseError(
            f"weighting '{cfg.weighting.method}' works on the shared parameters, and this model has "
            "none that train (adapters over a frozen base?): set model.sharing.train_base=true"
        )
    run = Resumable(
        ctx.core, optimizer, scheduler, sampler, weighting, streams, acc, running={n: [] for n in tasks}
    )
    if resume:
        run.restore(out / rundir.CHECKPOINTS, warn=lambda m: print(m, flush=True) if main else None)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and rundir.owner(out):
            rundir.stash_previous(out)  # data and model are good: only now move the old run aside
        rundir.mark(out, "train")
        (out / rundir.CONFIG).write_text(dump(cfg), encoding="utf-8")  # resolved: defaults written out
        if is_lstm_config(encoder.config):  # from scratch: the initial weights are what its merges share
            save_initial(encoder, out, source.run_dir if source is not None else None)
    acc.wait_for_everyone()
    state = run.loop
    log = RunLog(
        out, main, trackers_of(tr), state.step if resume else None, tr.tracker_project, tr.tracker_init
    )
    if main and not resume:
        log.write(
            {
                "step": 0,
                "event": "start",
                "total_steps": sched.total,
                "steps_per_epoch": sched.steps_per_epoch,
                "sizes": sizes,
                "processes": world,
                "sampling_probs": sampler.probs(0),
                **({"init_from": cfg.model.init_from, "init_heads": init_heads} if source else {}),
            }
        )
    last_eval: dict[
        str, Any
    ] = {}  # the latest evaluation, reused at the end when it scored the final weights

    def next_batch(name: str) -> tuple[int, dict[str, torch.Tensor]]:
        """The next global batch of a task; this process keeps its share (every world-th example). Random
        parts of a batch (masked LM's masks) are drawn from the stream's seed and epoch: resumable."""
        stream = streams[name]
        idx = stream.next()
        draw = (stream.seed, stream.epoch)  # the epoch of this batch (next() has moved on to it)
        batch = collate(tasks[name].splits["train"], idx[rank::world], pad_id, tasks[name].type, draw)
        return len(idx), {k: v.to(acc.device) for k, v in batch.items()}

    def step_tasks(step: int) -> list[str]:
        """sampled: one task drawn by the sampler; joint: every task, or k drawn without replacement."""
        k = tr.joint_tasks
        if not plan.joint:
            return [sampler.sample(step)]
        if not k or k == len(tasks):
            return list(tasks)
        probs = sampler.probs(step)
        chosen = np.random.default_rng([tr.seed, step]).choice(
            len(tasks), size=k, replace=False, p=[probs[n] for n in tasks]
        )
        return [list(tasks)[i] for i in sorted(chosen)]

    # ---- the loop ----------------------------------------------------------------------------------
    backward = backward_for(plan.step)
    model.train()
    bar = tqdm(total=sched.total, initial=state.step, disable=not (main and tr.progress), desc="train")
    last_checkpoint = time.monotonic()
    with stop_on_signals() as stop:
        while state.step < sched.total and not state.stopped_early:
            t0 = time.perf_counter()
            for micro in range(tr.grad_accum):
                batches = {}
                for name in step_tasks(state.step):
                    n_examples, batches[name] = next_batch(name)
                    state.samples_seen += n_examples
                losses = backward(ctx, batches, state.step, tr.grad_accum, micro == tr.grad_accum - 1)
                run.add_losses(losses)
            # sharing regulariser (soft sharing's pull, adapter delta penalty): its gradient goes straight into
            # .grad, which works under DDP and after gradient-level methods alike
            ctx.core.add_extra_loss_grad(acc.scaler.get_scale() if acc.scaler is not None else 1.0)
            if tr.max_grad_norm:
                acc.clip_grad_norm_(model.parameters(), tr.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():  # FAMO: the same batches' losses after the update
                weighting.after_step(lambda b=batches: task_losses(ctx, ctx.core, b))
            state.step += 1
            if state.step % sched.steps_per_epoch == 0:  # DWA and friends look at whole-epoch average losses
                run.flush_losses()
                weighting.end_epoch({n: s / max(c, 1) for n, (s, c) in state.epoch_losses.items()})
                state.epoch_losses = {}
            state.train_seconds += time.perf_counter() - t0
            bar.update(1)
            fault_point(f"step:{state.step}")
            if state.step % tr.log_every == 0 or state.step == sched.total:
                rec = {"step": state.step, "lr": scheduler.get_last_lr()[0]}
                run.flush_losses()
                rec.update({f"loss/{n}": float(np.mean(v)) for n, v in run.running.items() if v})
                run.running = {n: [] for n in tasks}
                log.train_record(rec)
                bar.set_postfix(
                    {k.split("/")[-1]: f"{v:.3f}" for k, v in rec.items() if k.startswith("loss/")}
                )
            if state.step % sched.eval_every == 0 or state.step == sched.total:
                last_eval = evaluate_and_log(ctx, run, tr, out, tokenizer, log, bar, cfg.model.hf_copies)
            due = state.step % sched.checkpoint_every == 0 or state.step == sched.total or state.stopped_early
            if (
                due
                or stop
                or _minutes_passed(
                    acc, tr.checkpoint_minutes, last_checkpoint, state.step % tr.log_every == 0
                )
            ):
                run.save(out / rundir.CHECKPOINTS, tr.keep_checkpoints)
                last_checkpoint = time.monotonic()
            if stop:
                bar.close()
                log.close()
                raise Interrupted(f"interrupted at step {state.step}; resume with --resume")
    bar.close()
    restore_attention(ctx.core, switched_attention)  # the saved model and its final scores: SDPA, as loaded
    return finish(cfg, out, acc, ctx.core, tokenizer, tasks, state, sched, last_eval, log)


def _minutes_passed(acc: Any, minutes: float | None, since: float, check: bool) -> bool:
    """Whether ``minutes`` passed since the last checkpoint (all processes agree: rank 0's clock decides)."""
    if not minutes or not check:
        return False
    due = time.monotonic() - since >= 60.0 * minutes
    if acc.num_processes > 1:
        flag = torch.tensor([1.0 if (due and acc.is_main_process) else 0.0], device=acc.device)
        due = bool(acc.reduce(flag, reduction="sum").item() > 0)
    return due
