"""`mtfuse affinity`: a short joint run that measures inter-task affinity and gradient cosines, then writes the
matrices, heatmaps, recommended groupings (each as a ready config) and a transfer map.

Every step takes a batch of every task and trains on the sum of the task losses (equal weighting) with the
run's optimizer and schedule. Every ``every`` steps, before the optimizer step: the gradient of each task's
loss on the shared parameters (their cosines are logged), then for each task i a lookahead of the shared
parameters by the optimizer's update for i's gradient alone, and every task's loss on the same batches after
it (``mtfuse.affinity.lookahead``). Losses before and after are taken in eval mode (no dropout), so the
ratio measures the step and not the dropout noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from mtfuse import rundir
from mtfuse.affinity.grouping import best_groupings, transfer_map
from mtfuse.affinity.lookahead import lookahead_update, loss_affinity
from mtfuse.affinity.plots import affinity_figure, cosine_figure
from mtfuse.config import RunConfig, dump
from mtfuse.errors import ConfigError
from mtfuse.figures import save_png
from mtfuse.model import MultiTaskModel, load_encoder
from mtfuse.plan import check_encoder, make_plan
from mtfuse.tasks.features import collate
from mtfuse.tasks.prepare import prepare_tasks
from mtfuse.training.setup import (
    build_optimizer,
    head_dropout,
    head_specs,
    lr_lambda,
    make_streams,
    shared_named_parameters,
)
from mtfuse.training.steps import loss_of as task_loss

AFFINITY = rundir.AFFINITY


def measure(
    cfg: RunConfig, steps: int | None = None, every: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Run ``steps`` joint steps (default: ``train.max_steps``, else 100) and return the measurements:
    ``affinity[i][j]`` (i onto j, mean over measured steps), its standard error, ``cosine[i][j]``."""
    plan = make_plan(cfg)
    cfg, tr = plan.cfg, plan.cfg.train
    if len(cfg.tasks) < 2:
        raise ConfigError("affinity needs two or more tasks in the config")
    steps = steps or tr.max_steps or 100
    if steps < 1 or every < 1:
        raise ConfigError("affinity: --steps and --every must be at least 1")
    set_seed(tr.seed)
    encoder, tokenizer = load_encoder(cfg.model.name_or_path, cfg.model.lstm)
    check_encoder(cfg, encoder.config)
    tasks = prepare_tasks(cfg, tokenizer, ["train"])
    set_seed(tr.seed)
    model = MultiTaskModel.build(
        encoder, head_specs(tasks, cfg, head_dropout(cfg, encoder)), cfg.model.sharing
    )
    device = torch.device("cuda" if torch.cuda.is_available() and not tr.cpu else "cpu")
    model.to(device)
    names = list(tasks)
    pad_id = tokenizer.pad_token_id or 0
    streams = make_streams(cfg, tasks)
    optimizer = build_optimizer(model, cfg)
    warmup = tr.warmup_steps if tr.warmup_steps is not None else int(tr.warmup_ratio * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tr.scheduler, warmup, steps))
    shared = [p for _, p in shared_named_parameters(model) if p.requires_grad]
    if not shared:
        raise ConfigError("affinity: this model has no trainable shared parameters (frozen base?)")

    def losses_of(batches: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {n: task_loss(tasks[n], model.heads[n], model(n, b), b["labels"]) for n, b in batches.items()}

    K = len(names)
    z_sum, z_sq, cos_sum, measured = np.zeros((K, K)), np.zeros((K, K)), np.zeros((K, K)), 0
    bar = tqdm(total=steps, desc="affinity", disable=not progress)
    for step in range(steps):
        batches = {}
        for n in names:
            idx = streams[n].next()  # masked LM: masks drawn as training draws them
            b = collate(
                tasks[n].splits["train"], idx, pad_id, tasks[n].type, (streams[n].seed, streams[n].epoch)
            )
            batches[n] = {k: v.to(device) for k, v in b.items()}
        model.train()
        losses = losses_of(batches)
        measure_now = step % every == 0
        grads: dict[str, list[torch.Tensor | None]] = {}
        if measure_now:
            for n in names:
                grads[n] = list(torch.autograd.grad(losses[n], shared, retain_graph=True, allow_unused=True))
        torch.stack(list(losses.values())).sum().backward()
        if measure_now:
            Z = _lookahead_affinities(model, shared, grads, optimizer, batches, losses_of, names)
            z_sum += Z
            z_sq += Z * Z
            cos_sum += _cosines([grads[n] for n in names], shared)
            measured += 1
        if tr.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tr.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
    bar.close()
    mean = z_sum / measured
    var = np.maximum(z_sq / measured - mean * mean, 0.0)
    return {
        "tasks": names,
        "steps": steps,
        "every": every,
        "measured_steps": measured,
        "affinity": mean.tolist(),
        "affinity_stderr": (np.sqrt(var) / math.sqrt(max(measured - 1, 1))).tolist(),
        "cosine": (cos_sum / measured).tolist(),
        "config": cfg.model_dump(mode="json"),
    }


@torch.no_grad()
def _lookahead_affinities(
    model: MultiTaskModel,
    shared: list[torch.nn.Parameter],
    grads: dict[str, list[torch.Tensor | None]],
    optimizer: torch.optim.Optimizer,
    batches: dict[str, dict[str, torch.Tensor]],
    losses_of: Any,
    names: list[str],
) -> np.ndarray:
    """``Z[i, j]``: the relative drop of j's loss after a lookahead step on i's gradient (TAG eq. 3)."""
    model.eval()
    saved = [p.detach().clone() for p in shared]
    before = {n: float(v) for n, v in losses_of(batches).items()}
    Z = np.zeros((len(names), len(names)))
    for i, ni in enumerate(names):
        for p, d in zip(shared, lookahead_update(shared, grads[ni], optimizer), strict=True):
            if d is not None:
                p.add_(d)
        after = losses_of(batches)
        for j, nj in enumerate(names):
            Z[i, j] = loss_affinity(before[nj], float(after[nj]))
        for p, s in zip(shared, saved, strict=True):
            p.copy_(s)  # back to theta_t exactly
    model.train()
    return Z


def _cosines(grads: list[list[torch.Tensor | None]], shared: list[torch.nn.Parameter]) -> np.ndarray:
    flat = torch.stack(
        [
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                    for g, p in zip(gs, shared, strict=True)
                ]
            )
            for gs in grads
        ]
    )
    norms = flat.norm(dim=1).clamp(min=1e-30)
    return ((flat @ flat.T) / (norms[:, None] * norms[None, :])).cpu().numpy()


def recommend(result: dict[str, Any], top: int = 3) -> dict[str, Any]:
    """Groupings for every budget k = 1 .. number of tasks, and the transfer map."""
    Z, names = np.array(result["affinity"]), result["tasks"]
    groupings = {}
    for k in range(1, len(names) + 1):
        groupings[str(k)] = [
            {"groups": g.named(names), "predicted_affinity": round(g.score, 6), "search": g.search}
            for g in best_groupings(Z, k, top)
        ]
    return {"groupings": groupings, "transfer": transfer_map(Z, names)}


def write(result: dict[str, Any], output: Path, overwrite: bool) -> None:
    """affinity.json, heatmaps (affinity.png, cosine.png) and groupings/k<k>/<group>.yaml: the best grouping for
    each budget as configs ready for `mtfuse train`. Written whole or not at all."""
    cfg = RunConfig.model_validate(result["config"])

    def fill(tmp: Path) -> None:
        rundir.write_json(tmp / AFFINITY, result)
        save_png(affinity_figure(result), tmp / "affinity.png", dpi=110, tight=False)
        save_png(cosine_figure(result), tmp / "cosine.png", dpi=110, tight=False)
        for k, options in result["groupings"].items():
            if int(k) in (1, len(result["tasks"])):
                continue  # one model of all tasks is the input config; k = n is every task alone
            for g, group in enumerate(options[0]["groups"], start=1):
                sub = cfg.model_copy(update={"tasks": [t for t in cfg.tasks if t.name in group]})
                path = tmp / "groupings" / f"k{k}" / f"group{g}.yaml"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(dump(sub), encoding="utf-8")

    rundir.write_dir_atomic(output, "affinity", overwrite, fill)
