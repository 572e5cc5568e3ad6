"""A training run's ``log.jsonl`` (written by ``mtfuse.training.log.RunLog``) as curves: dev metrics and train
losses per task over the steps, task weights and sampling probabilities, and the gradient-cosine matrix of the
last evaluation that logged one (``train.diagnostics``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtfuse import rundir
from mtfuse.figures import heatmap_figure, pyplot


@dataclass
class TrainingLog:
    """The records of one run's log: ``evals`` (event "eval") and ``train`` (losses and learning rate)."""

    path: Path
    evals: list[dict[str, Any]] = field(default_factory=list)
    train: list[dict[str, Any]] = field(default_factory=list)
    unreadable: int = 0  # lines that are not JSON objects (a run killed mid-write)

    def tasks(self) -> list[str]:
        out: list[str] = []
        for rec in self.evals:
            out += [t for t in rec.get("metrics", {}) if t not in out]
        for rec in self.train:
            out += [k[5:] for k in rec if k.startswith("loss/") and k[5:] not in out]
        return out

    def last_conflicts(self) -> dict[str, Any] | None:
        """``{"step", "tasks", "cosine"}`` of the last evaluation with a gradient-cosine matrix."""
        for rec in reversed(self.evals):
            if "gradient_cosine" in rec:
                return {"step": rec["step"], **rec["gradient_cosine"]}
        return None


def read_log(run_dir: Path) -> TrainingLog | None:
    """``run_dir/log.jsonl`` parsed (None: the run has none)."""
    path = run_dir / rundir.LOG
    if not path.is_file():
        return None
    log = TrainingLog(path)
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            log.unreadable += 1
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            log.unreadable += 1
        elif rec.get("event") == "eval" and isinstance(rec.get("metrics"), dict):
            log.evals.append(rec)
        elif any(k.startswith("loss/") for k in rec):
            log.train.append(rec)
    return log


def _panels(n: int, width: float = 4.2, height: float = 3.0) -> tuple[Any, list[Any]]:
    plt = pyplot()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def dev_curves_figure(log: TrainingLog, name: str) -> Any:
    """One panel per task (each of its metrics over the steps) and one of the dev average."""
    tasks = [t for t in log.tasks() if any(t in r["metrics"] for r in log.evals)]
    fig, axes = _panels(len(tasks) + 1)
    for ax, task in zip(axes, tasks, strict=False):
        metrics: list[str] = []
        for r in log.evals:
            metrics += [m for m in r["metrics"].get(task, {}) if m not in metrics]
        for m in metrics:
            pts = [(r["step"], r["metrics"][task][m]) for r in log.evals if m in r["metrics"].get(task, {})]
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=m)
        ax.set_title(task, fontsize=10)
        ax.legend(fontsize="x-small")
    avg = [(r["step"], r["average"]) for r in log.evals if r.get("average") is not None]
    if avg:
        axes[-1].plot(*zip(*avg, strict=True), marker="o", markersize=3, color="black")
    axes[-1].set_title("dev average", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("dev score (0-100)")
    fig.suptitle(f"{name}: dev metrics over training")
    fig.tight_layout()
    return fig


def loss_figure(log: TrainingLog, name: str) -> Any:
    """The running mean train loss of each task between log records, over the steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for task in log.tasks():
        pts = [(r["step"], r[f"loss/{task}"]) for r in log.train if f"loss/{task}" in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".", label=task)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (mean since the last record)")
    ax.set_title(f"{name}: train loss per task")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def balance_figure(log: TrainingLog, name: str) -> Any:
    """Task weights (the weighting method's) and sampling probabilities at each evaluation."""
    fig, axes = _panels(2, width=5.0, height=3.4)
    for ax, key, label in zip(
        axes, ("task_weights", "sampling_probs"), ("task weight", "sampling probability"), strict=True
    ):
        for task in log.tasks():
            pts = [(r["step"], r[key][task]) for r in log.evals if task in (r.get(key) or {})]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=task)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(f"{label} at each evaluation", fontsize=10)
        ax.legend(fontsize="x-small")
    fig.suptitle(f"{name}: task balance over training")
    fig.tight_layout()
    return fig


def has_balance(log: TrainingLog) -> bool:
    """Weights or sampling probabilities of two or more tasks were logged (one task: always 1)."""
    return any(len(r.get(k) or {}) > 1 for r in log.evals for k in ("task_weights", "sampling_probs"))


def conflict_figure(conflicts: dict[str, Any], name: str) -> Any:
    """The task-gradient cosine matrix of one evaluation (negative: the tasks pull the encoder apart)."""
    return heatmap_figure(
        conflicts["cosine"],
        conflicts["tasks"],
        f"{name}: gradient cosine at step {conflicts['step']}",
        xlabel="task",
        ylabel="task",
        colourbar="cosine of task gradients",
    )
