"""Task groupings from an affinity matrix: which tasks to put in the same model, for a budget of k models.

A grouping is a partition of the tasks into k groups (one model each; every task is served by exactly one).
Following TAG (Fifty et al. 2021, https://arxiv.org/abs/2109.04617, section 3.2), a task's score in its group is
the mean affinity onto it from the group's other members, ``mean_{j in G, j != t} Z[j -> t]``; a task alone
scores 0 (no partner to gain from or lose to); a grouping's predicted total affinity is the sum over tasks.
TAG lets groups overlap and serves each task by its best group; a partition is what a user trains when each
task should come from one model, so that is what is searched here. Up to ``EXHAUSTIVE_MAX`` tasks every
partition is scored, as the paper does for its task counts; beyond, an agglomerative greedy search merges the
two groups whose union gains most until k remain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

EXHAUSTIVE_MAX = 8  # Bell(8) = 4,140 partitions; Bell(12) would be 4.2 million


def group_score(Z: np.ndarray, group: tuple[int, ...]) -> float:
    """Sum over the group's tasks of the mean affinity onto each from the others (``Z[i, j]``: i onto j)."""
    if len(group) < 2:
        return 0.0
    g = list(group)
    sub = Z[np.ix_(g, g)]
    onto = (sub.sum(axis=0) - np.diag(sub)) / (len(g) - 1)  # column t: the others' affinity onto t
    return float(onto.sum())


@dataclass(frozen=True)
class Grouping:
    groups: tuple[tuple[int, ...], ...]
    score: float  # predicted total affinity
    search: str  # "exhaustive" or "greedy"

    def named(self, tasks: list[str]) -> list[list[str]]:
        return [[tasks[i] for i in g] for g in self.groups]


def partitions(n: int, k: int) -> Iterator[tuple[tuple[int, ...], ...]]:
    """Every partition of ``range(n)`` into exactly ``k`` non-empty groups (restricted growth strings)."""

    def grow(i: int, labels: list[int], used: int) -> Iterator[list[int]]:
        if n - i < k - used:  # not enough tasks left to open the remaining groups
            return
        if i == n:
            if used == k:
                yield labels
            return
        for b in range(min(used + 1, k)):
            labels.append(b)
            yield from grow(i + 1, labels, max(used, b + 1))
            labels.pop()

    for labels in grow(0, [], 0):
        yield tuple(tuple(i for i in range(n) if labels[i] == b) for b in range(k))


def _greedy(Z: np.ndarray, k: int) -> tuple[tuple[int, ...], ...]:
    groups = [(i,) for i in range(len(Z))]
    while len(groups) > k:
        best, pair = -np.inf, (0, 1)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                union = tuple(sorted(groups[a] + groups[b]))
                gain = group_score(Z, union) - group_score(Z, groups[a]) - group_score(Z, groups[b])
                if gain > best:
                    best, pair = gain, (a, b)
        a, b = pair
        merged = tuple(sorted(groups[a] + groups[b]))
        groups = [g for i, g in enumerate(groups) if i not in pair] + [merged]
    return tuple(sorted(groups))


def best_groupings(Z: np.ndarray, k: int, top: int = 3) -> list[Grouping]:
    """The ``top`` best partitions of the tasks into ``k`` groups by predicted total affinity (one, the
    greedy result, beyond ``EXHAUSTIVE_MAX`` tasks). Ties keep the order of enumeration."""
    Z = np.asarray(Z, dtype=np.float64)
    n = len(Z)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of tasks ({n}), got {k}")
    if n > EXHAUSTIVE_MAX:
        g = _greedy(Z, k)
        return [Grouping(g, sum(group_score(Z, x) for x in g), "greedy")]
    scored = [(sum(group_score(Z, g) for g in p), p) for p in partitions(n, k)]
    scored.sort(key=lambda sp: -sp[0])
    return [Grouping(p, s, "exhaustive") for s, p in scored[:top]]


def transfer_map(Z: np.ndarray, tasks: list[str], eps: float = 0.0) -> dict[str, dict[str, list]]:
    """For each task: the partners whose steps lowered its loss (``helped_by``, largest first) and those whose
    steps raised it (``hurt_by``, worst first), with the affinity onto it."""
    out: dict[str, dict[str, list]] = {}
    for t, name in enumerate(tasks):
        onto = [(tasks[j], float(Z[j, t])) for j in range(len(tasks)) if j != t]
        out[name] = {
            "helped_by": sorted([x for x in onto if x[1] > eps], key=lambda x: -x[1]),
            "hurt_by": sorted([x for x in onto if x[1] < -eps], key=lambda x: x[1]),
        }
    return out
