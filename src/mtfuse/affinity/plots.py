"""The heatmaps of an affinity result (``affinity.json``): written as PNG by ``mtfuse affinity`` and drawn
inline by ``mtfuse report``."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtfuse.figures import heatmap_figure


def affinity_figure(result: dict[str, Any]) -> Any:
    """Row i onto column j: the relative drop of j's loss after a lookahead step on i alone."""
    return heatmap_figure(
        np.array(result["affinity"]), result["tasks"], "affinity: i onto j (1 - L_j after / before)"
    )


def cosine_figure(result: dict[str, Any]) -> Any:
    """The mean cosine of the task gradients on the shared parameters over the measured steps."""
    return heatmap_figure(np.array(result["cosine"]), result["tasks"], "gradient cosine")
