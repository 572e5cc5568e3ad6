"""Loss weighting: how per-task losses become the one loss that is back-propagated.

Each method is a registry entry in its own file. Loss-level methods implement ``combine``; gradient-level
methods (another issue) will take task losses plus shared parameters and set ``.grad``.
"""

from mtfuse.weighting.base import WEIGHTINGS, Weighting
from mtfuse.weighting import equal, static  # noqa: F401  (register the methods)

__all__ = ["WEIGHTINGS", "Weighting"]
