"""Choosing members: how differently do they err? Pairwise disagreement and error correlation, per task.

For members ``a`` and ``b`` on one task's dev units (examples; words for token tasks; example x label cells
for multi-label tasks):

* **disagreement**: the fraction of units where their decisions differ (Skalak 1996; Kuncheva & Whitaker
  2003). For regression, where decisions are numbers, the mean absolute difference of their predictions.
* **error correlation**: the Pearson correlation of their error indicators (1 where the decision is wrong;
  the phi coefficient), or of their residuals (prediction - gold) for regression. Members that err on the
  same examples (correlation near 1) gain little from being averaged. ``None`` when a member's errors are
  constant (never or always wrong), where the correlation is undefined.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble.members import TaskArrays, load_all, split_names


def decisions(ta: TaskArrays) -> np.ndarray:
    """Each member's decisions ``[M, ...]``."""
    return np.stack([ta.decide(ta.P[m]) for m in range(ta.n_members)])


def errors(ta: TaskArrays) -> np.ndarray:
    """Each member's errors, flattened per unit ``[M, U]`` (``TaskType.member_errors``: 0/1 indicators, or
    residuals for continuous outputs)."""
    d = decisions(ta)
    return np.stack([ta.type.member_errors(d[m], ta.y) for m in range(ta.n_members)])


def disagreement(a: np.ndarray, b: np.ndarray, values: bool = False) -> float:
    """Fraction of differing decisions (``values``: the mean absolute difference of continuous outputs)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0
    return float(np.mean(np.abs(a - b))) if values else float(np.mean(a != b))


def error_correlation(ea: np.ndarray, eb: np.ndarray) -> float | None:
    """Pearson correlation of two error vectors; None when either is constant."""
    ea, eb = np.asarray(ea, dtype=np.float64).ravel(), np.asarray(eb, dtype=np.float64).ravel()
    if ea.size < 2 or np.ptp(ea) == 0 or np.ptp(eb) == 0:
        return None
    return float(np.corrcoef(ea, eb)[0, 1])


def pairwise(ta: TaskArrays) -> dict[str, Any]:
    """One task's diversity record: members, their scores and error rates, and the two M x M matrices."""
    m = ta.n_members
    d = decisions(ta).reshape(m, -1)
    e = errors(ta)
    reg = ta.type.continuous
    dis = [[disagreement(d[i], d[j], reg) for j in range(m)] for i in range(m)]
    corr = [[error_correlation(e[i], e[j]) for j in range(m)] for i in range(m)]
    rate = [float(np.mean(np.abs(x))) if reg else float(np.mean(x)) for x in e]
    return {
        "members": [str(p) for p in ta.members],
        "member_scores": ta.member_scores(),
        "error_rate" if not reg else "mean_absolute_error": rate,
        "disagreement": dis,
        "disagreement_measure": "mean absolute difference" if reg else "fraction of differing decisions",
        "error_correlation": corr,
        "units": int(ta.P.shape[1]),
    }


def diversity_report(arrays: dict[str, TaskArrays]) -> dict[str, Any]:
    """``diversity.json``: per task, the pairwise record of :func:`pairwise`."""
    # tasks with text outputs (generation) have no label decisions to disagree on
    kept = {name: ta for name, ta in arrays.items() if not ta.type.fused_as_text}
    return {"split": "dev", "tasks": {name: pairwise(ta) for name, ta in kept.items()}}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


LEGEND = "member diversity per task: disagreement above the diagonal, error correlation below it"


def diversity_tables(report: dict[str, Any]) -> list[Any]:
    """One rich table per task: the disagreement above the diagonal, the error correlation below it."""
    from rich.table import Table

    tables = []
    for name, rec in report["tasks"].items():
        m = len(rec["members"])
        t = Table(title=f"{name}: diversity")
        t.add_column("member")
        for j in range(m):
            t.add_column(str(j + 1), justify="right")
        for i in range(m):
            cells = []
            for j in range(m):
                if i < j:
                    cells.append(_fmt(rec["disagreement"][i][j]))
                elif i > j:
                    cells.append(_fmt(rec["error_correlation"][i][j]))
                else:
                    cells.append("")
            t.add_row(str(i + 1), *cells)
        tables.append(t)
    return tables


def diversity_command(
    run_dirs: Sequence[str | Path],
    tasks: Sequence[str] | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    console: Any = None,
) -> dict[str, Any]:
    """``mtfuse diversity RUN_DIR... [--tasks a,b] [--output diversity.json]``: pairwise disagreement and
    error correlation of the members' dev predictions, per task; printed, and saved as JSON to ``output``.

    Same member checks as ``mtfuse ensemble`` (label sets, aligned dev examples, every task present)."""
    from mtfuse.rundir import write_json

    out = Path(output) if output is not None else None
    if out is not None and out.exists() and not overwrite:
        raise MtfuseError(f"{out}: already exists; pass --overwrite to replace it")
    members, arrays = load_all(list(run_dirs), split_names(tasks))
    report = diversity_report(arrays)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, report)
    if console is not None:
        for i, m in enumerate(members):
            console.print(f"member {i + 1}: {m.path}", highlight=False)
        console.print(LEGEND, highlight=False)
        for t in diversity_tables(report):
            console.print(t)
    return report
