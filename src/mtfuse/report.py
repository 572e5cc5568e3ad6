"""Render a comparison (``mtfuse.compare.build_comparison``): markdown tables, terminal tables and PNG plots.

Reading rules, the same in every output:

* an average is compared across systems only over the tasks every system has (the common tasks, named in
  the column header, the axis label or the panel title); a system's average over its own tasks, when the
  systems' tasks differ, sits in its own column, with the number of its tasks in each cell, and is never
  plotted beside another system's;
* normalised scores name their reference (the mean or the best single-task run of each task, and which runs);
* every system has its own colour (a categorical palette for up to 20, then evenly spaced hues) and its kind
  a marker (scatter) or a hatch (bars), so any number of systems stay apart;
* the terminal tables fit the console's width (80 columns and up): long names are shortened, and the task
  columns are split over as many tables as needed.

Figures (built once, saved as PNG by ``compare`` and inlined as SVG by ``mtfuse report``, see
``mtfuse.figures``): per-task score bars, and scores against each cost (parameters, latency per example at
batch 1, training time). The table functions give header and rows, rendered as markdown here and as HTML by
``mtfuse.html_report``.
"""

from __future__ import annotations

import colorsys
import textwrap
from pathlib import Path
from typing import Any

from mtfuse.figures import pyplot, save_png

KIND_MARKER = {
    "single-task": "o",
    "multi-task": "s",
    "fine-tuned": "P",
    "merged": "D",
    "ensemble": "^",
    "stack": "v",
}
KIND_HATCH = {
    "single-task": "",
    "multi-task": "//",
    "fine-tuned": "--",
    "merged": "..",
    "ensemble": "xx",
    "stack": "\\\\",
}
KIND_SHORT = {
    "single-task": "st",
    "multi-task": "mt",
    "fine-tuned": "ft",
    "merged": "merge",
    "ensemble": "ens",
    "stack": "stack",
}


def system_colours(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct RGB colours: matplotlib's tab10 / tab20 (as tab20 pairs them: dark shades first), then
    ``n`` evenly spaced hues at alternating lightness."""
    import matplotlib

    if n <= 10:
        return [tuple(c) for c in matplotlib.colormaps["tab10"].colors[:n]]  # type: ignore[attr-defined]
    if n <= 20:
        tab20 = matplotlib.colormaps["tab20"].colors  # type: ignore[attr-defined]
        return [tuple(c) for c in (tab20[0::2] + tab20[1::2])[:n]]
    return [colorsys.hls_to_rgb(i / n, 0.38 if i % 2 else 0.58, 0.75) for i in range(n)]


# ------------------------------------------------------------------------------------------ formatting


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _params(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def common_label(cmp: dict[str, Any]) -> str:
    common = cmp["common_tasks"]
    if not common:
        return "no task is common to all systems"
    if len(common) == len(cmp["tasks"]):
        return "all tasks"
    return ", ".join(common)


def _own(e: dict[str, Any], total: int, key: str = "average", fmt: str = "{:.2f}") -> str:
    v = e[key]
    return "–" if v is None else f"{fmt.format(v)} ({len(e['tasks'])}/{total})"


def reference_rows(cmp: dict[str, Any]) -> list[list[str]]:
    return [
        [t, f"{r['score']:.2f}", r.get("how", "mean"), ", ".join(r["runs"])]
        for t, r in cmp["reference"].items()
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---", "---"] + ["---:"] * (len(header) - 2)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def score_table(cmp: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the scores table: each task's metrics, the common-task average and, when the
    systems' tasks differ, each system's average over its own tasks (n/N)."""
    tasks, metrics, entries = cmp["tasks"], cmp["metrics"], cmp["entries"]
    cols = [(t, m) for t in tasks for m in metrics[t]]
    own = not cmp.get("same_tasks", False)
    header = [
        "system",
        "kind",
        *[f"{t} {m}" for t, m in cols],
        f"average ({common_label(cmp)})",
        *(["average of own tasks (n/N)"] if own else []),
    ]
    rows = [
        [
            e["name"],
            e["kind"],
            *[_num(e["metrics"].get(t, {}).get(m)) for t, m in cols],
            _num(e["common_average"]),
            *([_own(e, len(tasks))] if own else []),
        ]
        for e in entries
    ]
    return header, rows


def normalised_table(cmp: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the scores normalised to single-task (%), with the same averages."""
    tasks, entries = cmp["tasks"], cmp["entries"]
    own = not cmp.get("same_tasks", False)
    header = [
        "system",
        "kind",
        *tasks,
        f"average ({common_label(cmp)})",
        *(["average of own tasks (n/N)"] if own else []),
    ]
    rows = [
        [
            e["name"],
            e["kind"],
            *[_num(e["normalised"].get(t), "{:.1f}") for t in tasks],
            _num(e["normalised_average"], "{:.1f}"),
            *([_own(e, len(tasks), "normalised_own_average", "{:.1f}")] if own else []),
        ]
        for e in entries
    ]
    return header, rows


REFERENCE_HEADER = ["task", "reference", "of single-task runs", "runs"]
COST_HEADER = [
    "system",
    "kind",
    "parameters",
    "ms/example (batch 1)",
    "ms/example (batch 32)",
    "peak MB",
    "train s",
]


def cost_rows(cmp: dict[str, Any]) -> list[list[str]]:
    return [
        [
            e["name"],
            e["kind"],
            _params(e["cost"]["parameters"]),
            _num(e["cost"]["latency_ms_per_example"]["b1"]),
            _num(e["cost"]["latency_ms_per_example"]["b32"]),
            _num(e["cost"]["peak_memory_mb"], "{:.0f}"),
            _num(e["cost"]["train_seconds"], "{:.1f}"),
        ]
        for e in cmp["entries"]
    ]


def table_notes(cmp: dict[str, Any]) -> dict[str, str]:
    """The sentence under each table that says what its numbers are (the same in markdown and HTML)."""
    d, n = cmp["definitions"], len(cmp["tasks"])
    common = common_label(cmp)
    own_note = (
        f" Average of own tasks: {d['average']}; n/N = the system's tasks of the {n} compared."
        if not cmp.get("same_tasks", False)
        else " Every system has the same tasks."
    )
    return {
        "scores": f"Task score: {d['task_score']}. Average ({common}): {d['common_average']}."
        f"{own_note} Note: {d['ensembles']}.",
        "normalised": f"Normalised: {d['normalised']}. Average: {d['normalised_average']}.",
        "references": f"References ({cmp.get('reference_method', 'mean')} single-task run per task)",
        "no_reference": "No single-task run among the systems: nothing is normalised.",
        "cost": f"Latency: {d['latency']}. Cost: {d['cost']}.",
    }


def markdown(cmp: dict[str, Any]) -> str:
    """Tables: the benchmark's metrics, scores normalised to single-task (with their references), and cost."""
    notes = table_notes(cmp)
    refs = _table(REFERENCE_HEADER, reference_rows(cmp))
    parts = [
        f"# Comparison ({cmp['split']} split)",
        f"## Scores\n\n{_table(*score_table(cmp))}\n\n{notes['scores']}",
        f"## Normalised to single-task (%)\n\n{_table(*normalised_table(cmp))}\n\n{notes['normalised']}",
        f"### {notes['references']}\n\n" + (refs if cmp["reference"] else notes["no_reference"]),
        f"## Cost\n\n{_table(COST_HEADER, cost_rows(cmp))}\n\n{notes['cost']}",
    ]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ terminal


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def _text_table(title: str, header: list[str], rows: list[list[str]], width: int, fixed: int = 1) -> str:
    """Fixed-width columns; when too wide, the columns after the first ``fixed`` are split over several
    tables that repeat the fixed ones."""
    cells = [header, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    chunks: list[list[int]] = []
    used = sum(widths[:fixed]) + 2 * fixed
    for i in range(fixed, len(header)):
        if not chunks or used + widths[i] + 2 > width:
            chunks.append([])
            used = sum(widths[:fixed]) + 2 * fixed
        chunks[-1].append(i)
        used += widths[i] + 2
    out = []
    for k, chunk in enumerate(chunks or [[]]):
        idx = list(range(fixed)) + chunk
        head = title if len(chunks) <= 1 else f"{title} ({k + 1}/{len(chunks)})"
        lines = [head]
        for j, r in enumerate(cells):
            line = "  ".join(r[i].ljust(widths[i]) if i < fixed else r[i].rjust(widths[i]) for i in idx)
            lines.append(line.rstrip())
            if j == 0:
                lines.append("  ".join("-" * widths[i] for i in idx))
        out.append("\n".join(lines))
    return "\n\n".join(out)


def terminal(cmp: dict[str, Any], width: int = 80) -> str:
    """The comparison as plain fixed-width tables no wider than ``width`` (task scores, normalised scores with
    their references, cost), with the notes that say what each average is over."""
    tasks, entries = cmp["tasks"], cmp["entries"]
    n = len(tasks)
    own = not cmp.get("same_tasks", False)
    name_w = min(max([len("system"), *(len(e["name"]) for e in entries)]), max(12, width // 4))
    col_w = 10
    label = [f"{_short(e['name'], name_w)} [{KIND_SHORT.get(e['kind'], e['kind'])}]" for e in entries]

    def head(t: str) -> str:
        return _short(t, col_w)

    avg_head = "avg common"
    score_rows = [
        [
            lab,
            *[_num(e["task_scores"].get(t)) for t in tasks],
            _num(e["common_average"]),
            *([_own(e, n)] if own else []),
        ]
        for lab, e in zip(label, entries, strict=True)
    ]
    norm_rows = [
        [
            lab,
            *[_num(e["normalised"].get(t), "{:.1f}") for t in tasks],
            _num(e["normalised_average"], "{:.1f}"),
            *([_own(e, n, "normalised_own_average", "{:.1f}")] if own else []),
        ]
        for lab, e in zip(label, entries, strict=True)
    ]
    extra = ["avg own (n/N)"] if own else []
    cost_rows = [
        [
            lab,
            _params(e["cost"]["parameters"]),
            _num(e["cost"]["latency_ms_per_example"]["b1"]),
            _num(e["cost"]["latency_ms_per_example"]["b32"]),
            _num(e["cost"]["peak_memory_mb"], "{:.0f}"),
            _num(e["cost"]["train_seconds"], "{:.1f}"),
        ]
        for lab, e in zip(label, entries, strict=True)
    ]
    how = cmp.get("reference_method", "mean")
    refs = [
        f"{t} = {r['score']:.2f} ({r.get('how', how)} of {', '.join(r['runs'])})"
        for t, r in cmp["reference"].items()
    ]
    notes = [
        "task score: mean of the task's metrics (0-100; perplexity counts as 100 / perplexity); ensembles and "
        "stacks: out-of-fold on dev.",
        f"avg common: over the tasks every system has ({common_label(cmp)}).",
    ]
    if own:
        notes.append(
            f"avg own (n/N): over the system's own n of the {n} tasks; not comparable across systems."
        )
    notes.append(
        f"normalised: 100 * score / the {how} of the task's single-task runs: "
        + ("; ".join(refs) if refs else "no single-task run, nothing normalised")
        + "."
    )
    notes.append(
        "kinds: st single-task, mt multi-task, ft fine-tuned from another run (init_from), "
        "merge merged, ens ensemble, stack stacked."
    )
    wrap = [textwrap.fill(x, width=width, subsequent_indent="  ") for x in notes]
    parts = [
        f"Comparison ({cmp['split']} split)",
        _text_table("Task scores", ["system", *map(head, tasks), avg_head, *extra], score_rows, width),
        _text_table(
            "Normalised to single-task (%)", ["system", *map(head, tasks), avg_head, *extra], norm_rows, width
        ),
        _text_table("Cost", ["system", "params", "ms b1", "ms b32", "peak MB", "train s"], cost_rows, width),
        "\n".join(wrap),
    ]
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------ plots


def task_bars_figure(cmp: dict[str, Any]) -> Any:
    """Grouped bars: one group per task, plus the average over the common tasks when there are any; one bar
    per system (its own colour, its kind's hatch). A system's average over other task sets is not drawn."""
    import numpy as np

    plt = pyplot()
    groups = list(cmp["tasks"])
    if cmp["common_tasks"] and len(cmp["tasks"]) > 1:
        groups.append(f"average\n({common_label(cmp)})")
    entries = cmp["entries"]
    colours = system_colours(len(entries))
    width = 0.8 / max(len(entries), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 0.3 * len(entries)), 4.5))
    x = np.arange(len(groups))
    for i, e in enumerate(entries):
        vals = [e["task_scores"].get(t, np.nan) for t in cmp["tasks"]]
        if len(groups) > len(cmp["tasks"]):
            vals.append(e["common_average"] if e["common_average"] is not None else np.nan)
        ax.bar(
            x + (i - (len(entries) - 1) / 2) * width,
            vals,
            width,
            color=colours[i],
            hatch=KIND_HATCH.get(e["kind"], "++"),
            edgecolor="white" if KIND_HATCH.get(e["kind"], "++") else colours[i],
            linewidth=0.0,
            label=f"{e['name']} ({e['kind']})",
        )
    ax.set_xticks(x, groups)
    ax.set_ylabel("task score (dev, 0-100)")
    ax.set_title("Score per task" + ("" if cmp["common_tasks"] else "\n(no task is common to all systems)"))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), ncol=1 + len(entries) // 25)
    fig.tight_layout()
    return fig


def plot_task_bars(cmp: dict[str, Any], path: Path) -> None:
    """``task_bars_figure`` as a PNG file."""
    save_png(task_bars_figure(cmp), path)


def score_cost_rows(cmp: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The rows of the score-vs-cost figure: ``(title, task)``; ``task=None`` is the common-task average.

    The average over the common tasks when there are any; one row per task as well when the systems' tasks
    differ (so that no axis holds averages over different task sets)."""
    rows: list[tuple[str, str | None]] = []
    if cmp["common_tasks"]:
        rows.append((f"average score over {common_label(cmp)}", None))
    if not cmp.get("same_tasks", False) or not rows:
        rows += [(f"{t} score", t) for t in cmp["tasks"]]
    return rows


def score_vs_cost_figure(cmp: dict[str, Any]) -> Any:
    """Scores against parameters, latency per example (batch 1) and training time, one panel each: a row for
    the average over the common tasks, and a row per task when the systems' tasks differ."""
    plt = pyplot()
    panels = [
        ("parameters", lambda c: c["parameters"], True),
        ("ms / example (batch 1)", lambda c: c["latency_ms_per_example"]["b1"], False),
        ("training seconds", lambda c: c["train_seconds"], False),
    ]
    rows = score_cost_rows(cmp)
    entries = cmp["entries"]
    colours = system_colours(len(entries))
    fig, axes = plt.subplots(
        len(rows), len(panels), figsize=(5.0 * len(panels), 3.8 * len(rows) + 0.6), squeeze=False
    )
    for r, (ylabel, task) in enumerate(rows):
        for ax, (label, get, logx) in zip(axes[r], panels, strict=True):
            shown = 0
            for i, e in enumerate(entries):
                x = get(e["cost"])
                y = e["common_average"] if task is None else e["task_scores"].get(task)
                if x is None or y is None:
                    continue
                ax.scatter(
                    [x], [y], marker=KIND_MARKER.get(e["kind"], "X"), color=colours[i], s=46,
                    label=f"{e['name']} ({e['kind']})",
                )  # fmt: skip
                ax.annotate(e["name"], (x, y), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
                shown += 1
            if shown == 0:
                ax.text(
                    0.5,
                    0.5,
                    "not measured\n(latency: --latency N)" if "ms" in label else "not recorded",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
            elif logx:
                ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(textwrap.fill(ylabel, 40))
    handles, names = [], []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
            if n not in names:
                handles.append(h)
                names.append(n)
    if handles:
        fig.legend(handles, names, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 0.98))
    fig.suptitle("Score against cost")
    fig.tight_layout()
    return fig


def plot_score_vs_cost(cmp: dict[str, Any], path: Path) -> None:
    """``score_vs_cost_figure`` as a PNG file."""
    save_png(score_vs_cost_figure(cmp), path)
