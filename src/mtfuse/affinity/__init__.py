"""Which tasks to train together: measured inter-task affinity (TAG), gradient cosines, groupings.

``lookahead`` holds the maths of one affinity measurement, ``grouping`` the search for task groups, ``run``
the short joint run behind ``mtfuse affinity`` and the files it writes, ``plots`` its heatmaps.
"""

from mtfuse.affinity.grouping import Grouping, best_groupings, group_score, transfer_map
from mtfuse.affinity.lookahead import lookahead_update, loss_affinity

__all__ = ["Grouping", "best_groupings", "group_score", "loss_affinity", "lookahead_update", "transfer_map"]
