"""Loss weighting: how per-task losses (or gradients) become the one update that is applied.

Each method is a registry entry in its own file, citing its paper (see README.md in this folder). Loss-level
methods implement ``combine``; gradient-level methods (``GradientMethod``) implement ``aggregate`` over the
matrix of per-task gradients of the shared parameters, and the loop writes the result into ``.grad``.
"""

from mtfuse.weighting import (  # noqa: F401  (register the methods)
    aligned_mtl,
    baselines,
    cagrad,
    conflict_free,
    db_mtl,
    dualproj,
    dwa,
    equal,
    excess_mtl,
    fairgrad,
    famo,
    gls,
    graddrop,
    gradnorm,
    gradvac,
    imtl,
    mgda,
    moco,
    nash_mtl,
    pcgrad,
    rlw,
    static,
    stch,
    uncertainty,
    upgrad,
)
from mtfuse.weighting.base import WEIGHTINGS, GradientMethod, Weighting

__all__ = ["WEIGHTINGS", "GradientMethod", "Weighting"]
