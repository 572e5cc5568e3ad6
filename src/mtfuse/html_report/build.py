"""The report's sections, from the inputs read by ``mtfuse.html_report.inputs``: comparison tables, per-task
bars, quality against cost, learning curves, gradient conflicts and task affinity.

A section without data keeps its title and says in one line why it is empty. The tables and figures are
``mtfuse.report``'s (the same reading rules as ``compare.md`` and its PNGs); here they are only rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mtfuse
import mtfuse.html_report.page as H
import mtfuse.html_report.training as T
from mtfuse import report
from mtfuse.compare import build_comparison
from mtfuse.figures import to_svg
from mtfuse.html_report.inputs import Affinity, Inputs

TRAINED = ("single-task", "multi-task", "fine-tuned")  # kinds that have a training log


class Figures:
    """Numbers the figures of one page, so that their SVG ids never collide."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: Any, caption: str) -> str:
        self.count += 1
        return H.figure(to_svg(fig, f"fig{self.count}"), caption)


def _kinds_legend() -> str:
    kinds = ", ".join(
        f"{k}: marker '{report.KIND_MARKER[k]}', hatch '{report.KIND_HATCH[k] or 'none'}'"
        for k in report.KIND_MARKER
    )
    return (
        "Each system has its own colour (the swatch in the tables, the same in every figure); its kind is its "
        f"marker in scatters and its hatch in bars ({kinds})."
    )


def comparison_section(cmp: dict[str, Any] | None, inputs: Inputs) -> list[H.Part]:
    if cmp is None:
        return [
            H.Note(
                "No run, merge, ensemble, stack or compare directory among the inputs: nothing to compare."
            )
        ]
    colours = report.system_colours(len(cmp["entries"]))
    notes = report.table_notes(cmp)
    refs = report.reference_rows(cmp)
    out = [
        H.para(
            f"{len(cmp['entries'])} systems on the {cmp['split']} split; normalised to the "
            f"{cmp['reference_method']} single-task run of each task."
            + (f" Comparisons read: {', '.join(map(str, inputs.comparisons))}." if inputs.comparisons else "")
        ),
        H.heading(3, "Scores"),
        H.table(*report.score_table(cmp), colours),
        H.para(notes["scores"]),
        H.heading(3, "Normalised to single-task (%)"),
        H.table(*report.normalised_table(cmp), colours),
        H.para(notes["normalised"]),
        H.heading(4, notes["references"]),
        H.table(report.REFERENCE_HEADER, refs) if refs else H.Note(notes["no_reference"]),
        H.heading(3, "Cost"),
        H.table(report.COST_HEADER, report.cost_rows(cmp), colours),
        H.para(notes["cost"]),
        H.para(_kinds_legend()),
    ]
    out += [H.para(f"{e['name']}: {n}") for e in cmp["entries"] for n in e["notes"]]
    return out


def bars_section(cmp: dict[str, Any] | None, fig: Figures) -> list[H.Part]:
    if cmp is None:
        return [
            H.Note("No system to plot: no run, merge, ensemble, stack or compare directory among the inputs.")
        ]
    caption = (
        f"Task score (dev, 0-100) of every system on each task, and the average over the common tasks "
        f"({report.common_label(cmp)}); one colour per system, one hatch per kind."
    )
    return [fig(report.task_bars_figure(cmp), caption)]


def cost_section(cmp: dict[str, Any] | None, fig: Figures) -> list[H.Part]:
    if cmp is None:
        return [
            H.Note("No system to plot: no run, merge, ensemble, stack or compare directory among the inputs.")
        ]
    caption = (
        "Score against parameters (log scale), inference latency per example at batch 1, and training time; "
        "one colour per system, one marker per kind. Latency is measured only by 'mtfuse compare --latency N': "
        "give that comparison's directory to show it."
    )
    return [fig(report.score_vs_cost_figure(cmp), caption)]


def _logs(cmp: dict[str, Any] | None) -> tuple[list[tuple[str, Path, T.TrainingLog]], list[str]]:
    """The training logs of the compared runs, and a note for each trained run without one."""
    found, notes = [], []
    for e in cmp["entries"] if cmp else []:
        path = Path(e["path"])
        log = T.read_log(path) if path.is_dir() else None
        if log is not None:
            found.append((e["name"], path, log))
        elif e["kind"] in TRAINED:
            why = f"{path} is a results file" if path.is_file() else f"no {path / 'log.jsonl'}"
            notes.append(f"{e['name']}: {why}, so no curves.")
    return found, notes


def training_section(
    logs: list[tuple[str, Path, T.TrainingLog]], missing: list[str], fig: Figures
) -> list[H.Part]:
    if not logs:
        return [H.Note("No training log (log.jsonl) in any input run: no learning curves.")] + [
            H.Note(n) for n in missing
        ]
    out: list[H.Part] = []
    for name, path, log in logs:
        out.append(H.heading(3, f"{name} ({path})"))
        if log.unreadable:
            out.append(H.Note(f"{log.unreadable} unreadable line(s) in {log.path} skipped."))
        if log.evals:
            cap = f"{name}: every dev metric of every task at each evaluation, and the dev average (0-100)."
            out.append(fig(T.dev_curves_figure(log, name), cap))
        else:
            out.append(H.Note(f"no evaluation record in {log.path}."))
        if log.train:
            cap = f"{name}: the mean train loss of each task since the previous log record (every train.log_every steps)."
            out.append(fig(T.loss_figure(log, name), cap))
        else:
            out.append(H.Note(f"no train-loss record in {log.path}."))
        if T.has_balance(log):
            cap = (
                f"{name}: the loss weight of each task (the weighting method's) and the probability of sampling "
                "it, at each evaluation."
            )
            out.append(fig(T.balance_figure(log, name), cap))
        elif len(log.tasks()) > 1:
            out.append(H.Note(f"{name}: no task weights or sampling probabilities in {log.path}."))
        else:
            out.append(H.Note(f"{name} has one task: its weight and sampling probability are 1 throughout."))
    return out + [H.Note(n) for n in missing]


def conflicts_section(logs: list[tuple[str, Path, T.TrainingLog]], fig: Figures) -> list[H.Part]:
    if not logs:
        return [H.Note("No training log (log.jsonl) in any input run: no gradient conflicts.")]
    out: list[H.Part] = []
    for name, _, log in logs:
        c = log.last_conflicts()
        if c is None:
            out.append(
                H.Note(
                    f"{name}: no gradient_cosine in {log.path} (train.diagnostics off, a single task, or no "
                    "shared trainable parameters)."
                )
            )
            continue
        caption = (
            f"{name}: cosine of the task gradients on the shared parameters at step {c['step']}, the last "
            "evaluation that logged them (one fixed train batch per task). Negative: the tasks pull the shared "
            "encoder in conflicting directions."
        )
        out.append(fig(T.conflict_figure(c, name), caption))
    return out


def _grouping_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for k, options in result.get("groupings", {}).items():
        for rank, o in enumerate(options, start=1):
            groups = " | ".join(", ".join(g) for g in o["groups"])
            rows.append(
                [str(k), str(rank), groups, f"{o['predicted_affinity']:+.4f}", str(o.get("search", ""))]
            )
    return rows


def _transfer_rows(result: dict[str, Any]) -> list[list[str]]:
    def pairs(xs: list[Any]) -> str:
        return ", ".join(f"{p} {v:+.4f}" for p, v in xs) or "none"

    return [[t, pairs(v["helped_by"]), pairs(v["hurt_by"])] for t, v in result.get("transfer", {}).items()]


def affinity_section(affinities: list[Affinity], fig: Figures) -> list[H.Part]:
    from mtfuse.affinity.plots import affinity_figure

    if not affinities:
        return [H.Note("No affinity directory among the inputs ('mtfuse affinity' writes one).")]
    out: list[H.Part] = []
    for a in affinities:
        res = a.result
        out.append(H.heading(3, str(a.path)))
        steps = f"{res.get('measured_steps', '?')} measured steps of {res.get('steps', '?')}"
        caption = (
            f"Inter-task affinity ({steps}): row i onto column j is 1 - L_j after / L_j before a lookahead step "
            "of the shared encoder on task i alone (TAG, Fifty et al. 2021); positive: a step on i helps j."
        )
        out.append(fig(affinity_figure(res), caption))
        rows = _grouping_rows(res)
        out.append(H.heading(4, "Recommended groupings (best first for each budget of k models)"))
        out.append(
            H.table(["k models", "rank", "groups", "predicted affinity", "search"], rows)
            if rows
            else H.Note(f"no groupings in {a.path / 'affinity.json'}.")
        )
        transfer = _transfer_rows(res)
        if transfer:
            out.append(H.heading(4, "Transfer map"))
            out.append(H.table(["task", "helped by", "hurt by"], transfer))
    return out


def build_html(inputs: Inputs) -> tuple[str, list[str]]:
    """The page, and the notes that say why a section is empty (also printed by the CLI)."""
    cmp = build_comparison(inputs.entries, inputs.reference) if inputs.entries else None
    fig = Figures()
    logs, missing = _logs(cmp)
    sections = [
        ("comparison", "Comparison", comparison_section(cmp, inputs)),
        ("scores", "Scores per task", bars_section(cmp, fig)),
        ("cost", "Quality against cost", cost_section(cmp, fig)),
        ("training", "Learning curves", training_section(logs, missing, fig)),
        ("conflicts", "Gradient conflicts", conflicts_section(logs, fig)),
        ("affinity", "Task affinity", affinity_section(inputs.affinities, fig)),
    ]
    intro = [
        H.para(f"Inputs: {', '.join(map(str, inputs.paths))}."),
        H.para(
            f"Written by mtfuse {mtfuse.__version__} from the inputs' JSON and log files; nothing was trained or "
            "evaluated to make it."
        ),
    ]
    notes = [p.text for _, _, body in sections for p in body if isinstance(p, H.Note)]
    return H.page("mtfuse report", intro, sections), notes
