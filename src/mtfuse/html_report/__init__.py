"""`mtfuse report`: one self-contained HTML page (``DIR/report.html``) from runs, fusions, comparisons and
affinity results.

It shows the comparison tables (scores, normalised to single-task, cost: ``mtfuse.compare`` and
``mtfuse.report``'s rules), per-task bars and quality against cost, each training run's learning curves, task
weights and sampling probabilities (``log.jsonl``), the gradient-conflict matrix of its last evaluation, and the
affinity matrix and recommended groupings of an ``mtfuse affinity`` directory. Figures are inline SVG, the CSS
inline, and nothing is loaded from anywhere: the file opens offline, alone. Like ``compare``, it only reads.

``inputs`` reads and checks what is given, ``training`` turns a run log into curves, ``build`` lays out the
sections and ``page`` holds the HTML building blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mtfuse import rundir
from mtfuse.html_report.build import build_html
from mtfuse.html_report.inputs import Inputs, collect

__all__ = ["Inputs", "build_html", "collect", "report_command"]


def report_command(
    paths: Sequence[str | Path], output: str | Path, overwrite: bool = False, reference: str | None = None
) -> list[str]:
    """``mtfuse report PATH... --output DIR``: write ``DIR/report.html``.

    Args:
        paths: run, merge, ensemble or stack directories, results JSON files, ``mtfuse compare`` or
            ``mtfuse affinity`` directories, or folders holding them.
        output: the directory to write (refused if it exists, unless ``overwrite`` and it holds a report).
        overwrite: replace an existing report directory.
        reference: normalise each task to the ``"mean"`` or ``"best"`` of its single-task runs (default: what
            the first compare directory used, else the mean).

    Returns the notes that say why a section is empty. Every bad input is one ``MtfuseError`` naming its path,
    raised before anything is written."""
    output = Path(output)
    rundir.check_output(output, "report", overwrite)  # before reading anything
    text, notes = build_html(collect(paths, reference))

    def fill(tmp: Path) -> None:
        (tmp / rundir.REPORT).write_text(text, encoding="utf-8")

    rundir.write_dir_atomic(output, "report", overwrite, fill)
    return notes
