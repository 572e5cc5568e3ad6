"""Render a comparison (``mtfuse.compare.build_comparison``): markdown tables and PNG plots.

Plots use matplotlib's non-interactive Agg backend (no display needed): per-task score bars, and the average
score against each cost (parameters, latency per example at batch 1, training time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KIND_STYLE = {  # marker and colour per kind of system
    "single-task": ("o", "tab:blue"),
    "multi-task": ("s", "tab:orange"),
    "merged": ("D", "tab:green"),
    "ensemble": ("^", "tab:red"),
    "stack": ("v", "tab:purple"),
}


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _params(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---", "---"] + ["---:"] * (len(header) - 2)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(cmp: dict[str, Any]) -> str:
    """Three tables: the benchmark's metrics, scores normalised to single-task, and cost."""
    tasks, metrics, entries = cmp["tasks"], cmp["metrics"], cmp["entries"]
    cols = [(t, m) for t in tasks for m in metrics[t]]
    scores = _table(
        ["system", "kind", *[f"{t} {m}" for t, m in cols], "average", "average (common tasks)"],
        [
            [
                e["name"],
                e["kind"],
                *[_num(e["metrics"].get(t, {}).get(m)) for t, m in cols],
                _num(e["average"]),
                _num(e["common_average"]),
            ]
            for e in entries
        ],
    )
    norm = _table(
        ["system", "kind", *tasks, "average"],
        [
            [
                e["name"],
                e["kind"],
                *[_num(e["normalised"].get(t), "{:.1f}") for t in tasks],
                _num(e["normalised_average"], "{:.1f}"),
            ]
            for e in entries
        ],
    )
    cost = _table(
        [
            "system",
            "kind",
            "parameters",
            "ms/example (batch 1)",
            "ms/example (batch 32)",
            "peak MB",
            "train s",
        ],
        [
            [
                e["name"],
                e["kind"],
                _params(e["cost"]["parameters"]),
                _num(e["cost"]["latency_ms_per_example"]["b1"]),
                _num(e["cost"]["latency_ms_per_example"]["b32"]),
                _num(e["cost"]["peak_memory_mb"], "{:.0f}"),
                _num(e["cost"]["train_seconds"], "{:.1f}"),
            ]
            for e in entries
        ],
    )
    refs = ", ".join(f"{t}: {r['score']:.2f} ({', '.join(r['runs'])})" for t, r in cmp["reference"].items())
    common = ", ".join(cmp["common_tasks"]) or "none"
    d = cmp["definitions"]
    parts = [
        f"# Comparison ({cmp['split']} split)",
        f"## Scores\n\n{scores}\n\nTask score: {d['task_score']}. Average: {d['average']}. "
        f"Average (common tasks: {common}): {d['common_average']}. Note: {d['ensembles']}.",
        f"## Normalised to single-task (%)\n\n{norm}\n\nNormalised: {d['normalised']}. "
        f"References: {refs or 'none'}.",
        f"## Cost\n\n{cost}\n\nLatency: {d['latency']}. Cost: {d['cost']}.",
    ]
    return "\n\n".join(parts) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_task_bars(cmp: dict[str, Any], path: Path) -> None:
    """Grouped bars: one group per task (and the average), one bar per system."""
    import numpy as np

    plt = _pyplot()
    groups = [*cmp["tasks"], "average"]
    entries = cmp["entries"]
    width = 0.8 / max(len(entries), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 0.3 * len(entries)), 4.5))
    x = np.arange(len(groups))
    for i, e in enumerate(entries):
        vals = [e["task_scores"].get(t, np.nan) for t in cmp["tasks"]] + [e["average"] or np.nan]
        ax.bar(x + (i - (len(entries) - 1) / 2) * width, vals, width, label=f"{e['name']} ({e['kind']})")
    ax.set_xticks(x, groups)
    ax.set_ylabel("task score (dev, 0-100)")
    ax.set_title("Score per task")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_score_vs_cost(cmp: dict[str, Any], path: Path) -> None:
    """Average score against parameters, latency per example (batch 1) and training time, one panel each.

    The score is the average over the tasks every system has when there are such tasks (comparable), else
    each system's own average."""
    plt = _pyplot()
    key = "common_average" if cmp["common_tasks"] else "average"
    ylabel = "average score (dev)" + (
        f" over {', '.join(cmp['common_tasks'])}" if cmp["common_tasks"] else ""
    )
    panels = [
        ("parameters", lambda c: c["parameters"], True),
        ("ms / example (batch 1)", lambda c: c["latency_ms_per_example"]["b1"], False),
        ("training seconds", lambda c: c["train_seconds"], False),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.2), squeeze=False)
    for ax, (label, get, logx) in zip(axes[0], panels, strict=True):
        shown = 0
        for e in cmp["entries"]:
            x, y = get(e["cost"]), e[key]
            if x is None or y is None:
                continue
            marker, colour = KIND_STYLE.get(e["kind"], ("x", "tab:gray"))
            ax.scatter([x], [y], marker=marker, color=colour, label=e["kind"])
            ax.annotate(e["name"], (x, y), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
            shown += 1
        if shown == 0:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        elif logx:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        handles, names = ax.get_legend_handles_labels()
        uniq = dict(zip(names, handles, strict=True))
        if uniq:
            ax.legend(uniq.values(), uniq.keys(), fontsize="small")
    fig.suptitle("Score against cost")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
