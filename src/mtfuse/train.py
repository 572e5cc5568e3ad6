"""THE training loop: explicit, top to bottom, on `accelerate` (one process, or many: `accelerate launch`).

Each optimizer step in step mode 'sampled': the sampler picks a task for each micro-batch, that task's batch (its share of the
global batch on this process) goes through the encoder and the task's head, the weighting turns the task
loss into the loss to back-propagate, gradients are clipped, the optimizer and schedule step. Every
``eval_every`` steps all tasks are scored on dev; every ``checkpoint_every`` steps a resumable checkpoint is
written. Single-task training is the same loop with one task.

Step mode 'joint' takes a batch of every task (or of k sampled tasks) in each step. Loss-level weightings
combine the task losses into one loss; gradient-level methods (PCGrad, MGDA, UPGrad...) get the matrix of
per-task gradients of the shared parameters and return the update direction.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

import mtfuse
from mtfuse import rundir
from mtfuse.batching import BatchStream
from mtfuse.checkpoint import (
    fault_point,
    latest_checkpoint,
    load_checkpoint,
    load_extra_tensors,
    save_checkpoint,
)
from mtfuse.config import RunConfig, dump
from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.evaluate import evaluate_tasks, records, with_average
from mtfuse.gradients import cosine_matrix, last_shared_weight, task_gradient_matrix, write_gradient
from mtfuse.model import HeadSpec, MultiTaskModel, load_encoder
from mtfuse.params import params_check
from mtfuse.sampling import SAMPLERS
from mtfuse.tasks.features import TaskData, collate
from mtfuse.tasks.prepare import prepare_tasks
from mtfuse.weighting import WEIGHTINGS


@dataclass
class LoopState:
    """Everything the loop itself tracks between steps (saved in checkpoints)."""

    step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    samples_seen: int = 0
    epoch_losses: dict[str, list[float]] = field(default_factory=dict)  # task -> [sum, count] this epoch
    history: list[dict[str, Any]] = field(default_factory=list)


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
    return Accelerator(cpu=cpu, mixed_precision=precision, kwargs_handlers=[ddp])


def head_specs(tasks: dict[str, TaskData], cfg: RunConfig, dropout: float) -> dict[str, HeadSpec]:
    return {
        name: HeadSpec(
            task=name,
            task_type=t.type.name,
            head=t.type.head,
            num_outputs=t.type.num_outputs(t.labels),
            pooling=t.cfg.pooling or cfg.model.pooling,
            dropout=dropout,
            labels=t.labels,
            layer=t.cfg.layer,
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


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux: the process's peak resident memory
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class JsonlLog:
    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.exists():
            # drop what was logged after the checkpoint we resume from: it is about to be redone
            kept = [
                ln
                for ln in path.read_text().splitlines()
                if ln and json.loads(ln).get("step", 0) <= resume_step
            ]
            path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, rec: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")


def train(
    cfg: RunConfig,
    output_dir: str | os.PathLike[str],
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every task of ``cfg`` into ``output_dir``; return the final dev metrics."""
    out = Path(output_dir)
    acc = make_accelerator(cfg)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    if main:
        rundir.check_output(out, "train", overwrite, resume)  # refuse now, before any slow work
    acc.wait_for_everyone()

    # ---- data and model (all checks happen before anything is written) ------------------------------
    set_seed(cfg.train.seed)
    encoder, tokenizer = load_encoder(cfg.model.name_or_path)
    tasks = prepare_tasks(cfg, tokenizer, ["train", "dev"])
    dropout = cfg.model.head_dropout
    if dropout is None:
        dropout = float(getattr(encoder.config, "hidden_dropout_prob", 0.1))
    set_seed(cfg.train.seed)  # heads start from the same weights whatever the data preparation did
    model = MultiTaskModel.build(encoder, head_specs(tasks, cfg, dropout), cfg.model.sharing)
    pad_id = tokenizer.pad_token_id or 0

    B, accum = cfg.train.batch_size, cfg.train.grad_accum
    if B < world:
        raise MtfuseError(f"train.batch_size={B} is smaller than the number of processes ({world})")
    streams = {
        n: BatchStream(t.splits["train"].lengths(), B, cfg.train.seed + i, cfg.train.group_by_length)
        for i, (n, t) in enumerate(tasks.items())
    }
    micro_per_epoch = sum(s.batches_per_epoch() for s in streams.values())
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / accum))
    total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
    eval_every = cfg.train.eval_every or steps_per_epoch
    ckpt_every = cfg.train.checkpoint_every or eval_every
    warmup = (
        cfg.train.warmup_steps if cfg.train.warmup_steps is not None else int(cfg.train.warmup_ratio * total)
    )

    sizes = {n: len(t.splits["train"]) for n, t in tasks.items()}
    sampler_cls = SAMPLERS.get(cfg.sampling.method)
    sampler = sampler_cls(
        sizes,
        params_check(sampler_cls, cfg.sampling, "sampling"),
        cfg.train.seed,
        steps_per_epoch,
        total / steps_per_epoch,
    )
    weighting_cls = WEIGHTINGS.get(cfg.weighting.method)
    weighting = weighting_cls(
        list(tasks),
        params_check(weighting_cls, cfg.weighting, "weighting"),
        {n: t.cfg.loss_weight for n, t in tasks.items()},
    )

    joint = cfg.train.step_mode == "joint"
    needs_all = (
        weighting.is_gradient_method or weighting.needs_shared_layer_grads or weighting.needs_updated_losses
    )
    if needs_all and not joint:
        raise ConfigError(
            f"weighting '{cfg.weighting.method}' needs every task's loss in every step: "
            "set train.step_mode=joint"
        )
    if needs_all and cfg.train.joint_tasks:
        raise ConfigError(
            f"weighting '{cfg.weighting.method}' needs every task in every step: unset train.joint_tasks"
        )
    if weighting.is_gradient_method and accum > 1:
        raise ConfigError(
            f"weighting '{cfg.weighting.method}' aggregates task gradients per step: "
            "train.grad_accum must be 1 (raise batch_size instead)"
        )
    if cfg.train.joint_tasks is not None and not 1 <= cfg.train.joint_tasks <= len(tasks):
        raise ConfigError(f"train.joint_tasks must be between 1 and the number of tasks ({len(tasks)})")
    optimizer = build_optimizer(model, cfg, weighting.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.scheduler, warmup, total))
    model, optimizer = acc.prepare(model, optimizer)  # the scheduler is stepped by hand: once per step
    core: MultiTaskModel = acc.unwrap_model(model)
    shared_named = [(n, p) for n, p in shared_named_parameters(core) if p.requires_grad]
    shared = [p for _, p in shared_named]
    shared_ids = {id(p) for p in shared}
    own = [p for p in core.parameters() if p.requires_grad and id(p) not in shared_ids]  # heads, task modules
    if weighting.is_gradient_method and not shared:
        raise ConfigError(
            f"weighting '{cfg.weighting.method}' works on the shared parameters, and this model has "
            "none that train (adapters over a frozen base?): set model.sharing.train_base=true"
        )

    state = LoopState()
    running: dict[str, list[float]] = {n: [] for n in tasks}  # task losses since the last log record
    if resume:
        ckpt = latest_checkpoint(out / rundir.CHECKPOINTS)
        if ckpt is None:
            raise MtfuseError(f"{out}: no complete checkpoint to resume from")
        saved = load_checkpoint(ckpt, core, optimizer, rank)
        scheduler.load_state_dict(saved["scheduler"])
        sampler.load_state_dict(saved["sampler"])
        weighting.load_state_dict(saved["weighting"])
        weighting.load_tensor_state_dict(load_extra_tensors(ckpt))
        for n, s in streams.items():
            s.load_state_dict(saved["streams"][n])
        if acc.scaler is not None and saved.get("scaler"):
            acc.scaler.load_state_dict(saved["scaler"])
        state = LoopState(**saved["loop"])
        # losses of the steps between the last log record and the checkpoint: the next record averages them
        running.update({n: list(v) for n, v in saved.get("running", {}).items() if n in running})
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and rundir.owner(out):
            rundir.stash_previous(out)  # data and model are good: only now move the old run aside
        rundir.mark(out, "train")
        (out / rundir.CONFIG).write_text(dump(cfg), encoding="utf-8")
    acc.wait_for_everyone()

    log = JsonlLog(out / rundir.LOG, main, state.step if resume else None)
    tb = None
    if main and cfg.train.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        # hide what was logged after the checkpoint step (it is redone); that step's own eval is kept
        tb = SummaryWriter(str(out / "tb"), purge_step=state.step + 1 if resume else None)
    if main and not resume:
        log.write(
            {
                "step": 0,
                "event": "start",
                "total_steps": total,
                "steps_per_epoch": steps_per_epoch,
                "sizes": sizes,
                "processes": world,
                "sampling_probs": sampler.probs(0),
            }
        )

    last_eval: dict[
        str, Any
    ] = {}  # the latest evaluation, reused at the end when it scored the final weights

    def evaluate_now() -> dict[str, Any]:
        metrics, outputs = evaluate_tasks(
            core, tasks, "dev", cfg.train.eval_batch_size, acc.device, pad_id, acc.autocast
        )
        last_eval.update(step=state.step, metrics=metrics, outputs=outputs)
        return with_average(metrics)

    def checkpoint_now() -> None:
        payload = {
            "scheduler": scheduler.state_dict(),
            "sampler": sampler.state_dict(),
            "weighting": weighting.state_dict(),
            "streams": {n: s.state_dict() for n, s in streams.items()},
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "loop": state.__dict__,
            "running": running,
        }
        save_checkpoint(
            out / rundir.CHECKPOINTS,
            state.step,
            core,
            optimizer,
            payload,
            cfg.train.keep_checkpoints,
            main,
            rank,
            acc.wait_for_everyone,
            weighting.tensor_state_dict(),
        )

    def next_batch(name: str) -> tuple[int, dict[str, torch.Tensor]]:
        """The next global batch of a task; this process keeps its share (every world-th example)."""
        idx = streams[name].next()
        task = tasks[name]
        batch = collate(task.splits["train"], idx[rank::world], pad_id, task.type)
        return len(idx), {k: v.to(acc.device) for k, v in batch.items()}

    def joint_names(step: int) -> list[str]:
        """Every task, or k of them drawn without replacement by the sampler's probabilities (seeded)."""
        k = cfg.train.joint_tasks
        if not k or k == len(tasks):
            return list(tasks)
        probs = sampler.probs(step)
        rng = np.random.default_rng([cfg.train.seed, step])
        chosen = rng.choice(len(tasks), size=k, replace=False, p=[probs[n] for n in tasks])
        return [list(tasks)[i] for i in sorted(chosen)]

    def gradient_method_step(losses: dict[str, torch.Tensor]) -> None:
        """Gradient-level methods: aggregate the task gradients of the shared parameters into one update;
        each head (and other task-own parameter) gets the gradient of its own task's loss."""
        order = weighting.tasks
        G = task_gradient_matrix([losses[t] for t in order], shared, retain_last=True)
        if world > 1:
            G = acc.reduce(G, reduction="mean")  # every process aggregates the same matrix
        loss_vec = torch.stack([losses[t].detach().float() for t in order])
        write_gradient(shared, weighting.aggregate(G, loss_vec, state.step))
        own_grads = torch.autograd.grad(sum(losses.values()), own, allow_unused=True)
        for p, g in zip(own, own_grads, strict=True):
            p.grad = None if g is None else (acc.reduce(g, reduction="mean") if world > 1 else g)

    def conflict_diagnostics() -> dict[str, Any]:
        """Cosine similarity of task gradients on the shared parameters, one fixed train batch per task."""
        was = core.training
        core.eval()  # no dropout: consumes no random numbers, so resumed runs stay identical
        losses = []
        for name, task in tasks.items():
            enc = task.splits["train"]
            batch = collate(enc, np.arange(min(B, len(enc))), pad_id, task.type)
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            with acc.autocast():
                losses.append(task.type.loss(core(name, batch), batch["labels"]))
        cos = cosine_matrix(task_gradient_matrix(losses, shared))
        core.zero_grad(set_to_none=True)
        core.train(was)
        return {"tasks": list(tasks), "cosine": [[round(float(x), 4) for x in row] for row in cos]}

    # ---- the loop ----------------------------------------------------------------------------------
    model.train()
    bar = tqdm(total=total, initial=state.step, disable=not (main and cfg.train.progress), desc="train")
    while state.step < total and not state.stopped_early:
        t0 = time.perf_counter()
        for micro in range(accum):
            # sampled: the sampler picks one task for this micro-batch; joint: every task (or k of them)
            names = joint_names(state.step) if joint else [sampler.sample(state.step)]
            batches = {}
            for name in names:
                n_examples, batches[name] = next_batch(name)
                state.samples_seen += n_examples
            sync = micro == accum - 1
            ctx = acc.no_sync(model) if not sync and world > 1 else contextlib.nullcontext()
            forward = core if weighting.is_gradient_method else model  # gradient methods reduce by hand
            with ctx:
                with acc.autocast():
                    losses = {n: tasks[n].type.loss(forward(n, b), b["labels"]) for n, b in batches.items()}
                if weighting.is_gradient_method:
                    gradient_method_step(losses)
                else:
                    loss = weighting.combine(losses, state.step)
                    if (
                        weighting.needs_shared_layer_grads
                    ):  # GradNorm: per-task gradients at the last shared layer
                        W = last_shared_weight(shared_named)
                        layer_grads = {
                            n: torch.autograd.grad(v, W, retain_graph=True, allow_unused=True)[0]
                            for n, v in losses.items()
                        }
                        weighting.gradnorm_step(
                            losses,
                            {n: g if g is not None else torch.zeros_like(W) for n, g in layer_grads.items()},
                        )
                    acc.backward(loss / accum)
            for n, v in losses.items():
                running[n].append(v.item())
                acc_sum = state.epoch_losses.setdefault(n, [0.0, 0])
                acc_sum[0] += v.item()
                acc_sum[1] += 1
        # sharing regulariser (soft sharing's pull to the shared layers, adapter delta penalty): its gradient
        # goes straight into .grad, which works under DDP and after gradient-level methods alike
        core.add_extra_loss_grad(acc.scaler.get_scale() if acc.scaler is not None else 1.0)
        if cfg.train.max_grad_norm:
            acc.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if weighting.needs_updated_losses:  # FAMO: the same batches' losses after the update
            with torch.no_grad(), acc.autocast():
                weighting.update({n: tasks[n].type.loss(core(n, b), b["labels"]) for n, b in batches.items()})
        state.step += 1
        if state.step % steps_per_epoch == 0:  # DWA and friends look at whole-epoch average losses
            weighting.end_epoch({n: s / max(c, 1) for n, (s, c) in state.epoch_losses.items()})
            state.epoch_losses = {}
        state.train_seconds += time.perf_counter() - t0
        bar.update(1)
        fault_point(f"step:{state.step}")

        if state.step % cfg.train.log_every == 0 or state.step == total:
            rec: dict[str, Any] = {"step": state.step, "lr": scheduler.get_last_lr()[0]}
            for n, vals in running.items():
                if vals:
                    rec[f"loss/{n}"] = float(np.mean(vals))
            running = {n: [] for n in tasks}
            log.write(rec)
            if tb is not None:
                for k, v in rec.items():
                    if k != "step":
                        tb.add_scalar(k, v, state.step)
            bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in rec.items() if k.startswith("loss/")})

        if state.step % eval_every == 0 or state.step == total:
            result = evaluate_now()
            improved = state.best_score is None or result["average"] > state.best_score
            if improved:
                state.best_score, state.best_step, state.evals_since_best = result["average"], state.step, 0
                if cfg.train.select == "best" and main:
                    _save_model_atomic(core, tokenizer, out / "best_model")
            else:
                state.evals_since_best += 1
            pat = cfg.train.early_stopping_patience
            if pat is not None and state.evals_since_best >= pat:
                state.stopped_early = True
            rec = {
                "step": state.step,
                "event": "eval",
                "average": result["average"],
                "metrics": result["tasks"],
                "task_weights": weighting.weights(),
                "sampling_probs": sampler.probs(state.step),
            }
            if cfg.train.diagnostics and len(tasks) > 1 and main and shared:
                rec["gradient_cosine"] = conflict_diagnostics()
            state.history.append({"step": state.step, "average": result["average"]})
            log.write(rec)
            if tb is not None:
                tb.add_scalar("dev/average", result["average"], state.step)
                for n, ms in result["tasks"].items():
                    for m, v in ms.items():
                        tb.add_scalar(f"dev/{n}/{m}", v, state.step)
                for n, p in sampler.probs(state.step).items():
                    tb.add_scalar(f"sampling/{n}", p, state.step)
                for n, w in weighting.weights().items():
                    tb.add_scalar(f"weights/{n}", w, state.step)
                if "gradient_cosine" in rec:
                    names_, cos = rec["gradient_cosine"]["tasks"], rec["gradient_cosine"]["cosine"]
                    for i in range(len(names_)):
                        for j in range(i + 1, len(names_)):
                            tb.add_scalar(f"conflict/{names_[i]}-{names_[j]}", cos[i][j], state.step)
            if main:
                bar.write(f"step {state.step}: dev average {result['average']:.2f}")

        if state.step % ckpt_every == 0 or state.step == total or state.stopped_early:
            checkpoint_now()
    bar.close()

    # ---- final model, metrics, predictions ----------------------------------------------------------
    if main:
        if cfg.train.select == "best" and (out / "best_model").is_dir():
            if (out / rundir.MODEL).exists():
                shutil.rmtree(out / rundir.MODEL)
            os.replace(out / "best_model", out / rundir.MODEL)
            final_model, _ = MultiTaskModel.load(out / rundir.MODEL)
            final_model.to(acc.device)
        else:
            _save_model_atomic(core, tokenizer, out / rundir.MODEL)
            final_model = core
    acc.wait_for_everyone()
    if not main:
        return {}
    if final_model is core and last_eval.get("step") == state.step:
        metrics, outputs = last_eval["metrics"], last_eval["outputs"]
    else:
        metrics, outputs = evaluate_tasks(
            final_model, tasks, "dev", cfg.train.eval_batch_size, acc.device, pad_id, acc.autocast
        )
    final = with_average(metrics)
    for n, (p, pr) in outputs.items():
        rundir.write_jsonl(
            out / rundir.PREDICTIONS / f"{n}.jsonl", records(tasks[n], p, pr, tasks[n].gold["dev"])
        )
    rundir.write_json(out / rundir.METRICS, {"split": "dev", **final})
    rundir.write_json(out / rundir.RESULTS, results_record(cfg, final, state, core, acc, total))
    log.write({"step": state.step, "event": "end", "average": final["average"]})
    rundir.drop_previous(out)
    if tb is not None:
        tb.close()
    return final


def results_record(
    cfg: RunConfig,
    final: dict[str, Any],
    state: LoopState,
    model: MultiTaskModel,
    acc: Accelerator,
    total: int,
) -> dict[str, Any]:
    import transformers

    enc_params = sum(p.numel() for p in model.encoder.parameters())
    all_params = sum(p.numel() for p in model.parameters())
    return {
        "kind": "multi-task" if len(cfg.tasks) > 1 else "single-task",
        "tasks": [t.name for t in cfg.tasks],
        "metrics": final,
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


def _save_model_atomic(model: MultiTaskModel, tokenizer: Any, target: Path) -> None:
    tmp = target.with_name(f".tmp-{target.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp, tokenizer)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def shared_named_parameters(model: MultiTaskModel) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters every task uses (the sharing architecture decides; the encoder under hard sharing)."""
    fn = getattr(model, "shared_named_parameters", None)
    if fn is not None:
        return list(fn())
    return [(f"encoder.{n}", p) for n, p in model.encoder.named_parameters()]
