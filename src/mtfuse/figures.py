"""Matplotlib figures out as PNG files or as inline SVG text, and the one heatmap every matrix uses.

A figure is built once (a function returning a ``Figure``) and saved either way: ``save_png`` for the files
``compare`` and ``affinity`` write, ``to_svg`` for the self-contained HTML report. Plots use the
non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path, dpi: int = 120, tight: bool = True) -> None:
    """Write ``fig`` as a PNG file (creating its folder) and close it."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    finally:
        plt.close(fig)


_ID = re.compile(r'(\bid="|href="#|url\(#)')


def to_svg(fig: Any, prefix: str) -> str:
    """``fig`` as one ``<svg>`` element to inline in HTML (no XML header), and close it.

    Text stays text (smaller, searchable); every id gets ``prefix`` so that several figures in one page do
    not share ids (matplotlib numbers them ``figure_1``, ``axes_1``... in each file)."""
    import matplotlib

    plt = pyplot()
    buf = io.StringIO()
    try:
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
            fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    finally:
        plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    return _ID.sub(lambda m: f"{m.group(1)}{prefix}-", text)


def heatmap_figure(
    M: np.ndarray,
    names: list[str],
    title: str,
    xlabel: str = "onto task j",
    ylabel: str = "step on task i",
    colourbar: str | None = None,
) -> Any:
    """A square task-by-task matrix on a diverging scale centred on 0, each cell labelled with its value."""
    plt = pyplot()
    M = np.asarray(M, dtype=float)
    finite = M[np.isfinite(M)]
    lim = (float(np.abs(finite).max()) if finite.size else 0.0) or 1.0
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(names), 1.0 + 0.7 * len(names)))
    im = ax.imshow(M, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for i in range(len(names)):
        for j in range(len(names)):
            dark = abs(M[i, j]) > 0.6 * lim  # white on the dark ends of the scale, black elsewhere
            colour = "white" if dark else "black"
            ax.text(j, i, f"{M[i, j]:.3g}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(textwrap.fill(title, max(30, 12 * len(names))), fontsize=9)
    bar = fig.colorbar(im, ax=ax)
    if colourbar:
        bar.set_label(colourbar)
    fig.tight_layout()
    return fig
