"""Per-task batch order: seeded, resumable from two integers (epoch, position), optional length grouping."""

from __future__ import annotations

from typing import Any

import numpy as np


class BatchStream:
    """Endless batches of example indices for one task's train split.

    The order of epoch ``e`` is a pure function of (seed, e), so the state is just (epoch, position).
    With ``group_by_length``, each mega-batch of 50 batches is sorted by length (as Hugging Face's
    LengthGroupedSampler does) so batches hold similar lengths and padding is small.
    """

    MEGA = 50

    def __init__(
        self, lengths: np.ndarray, batch_size: int, seed: int, group_by_length: bool = False
    ) -> None:
        self.lengths = lengths
        self.n = len(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group_by_length
        self.epoch = 0
        self.pos = 0
        self._order: np.ndarray | None = None

    def _make_order(self) -> np.ndarray:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        if not self.group:
            return perm
        mega = self.MEGA * self.batch_size
        chunks = [perm[i : i + mega] for i in range(0, self.n, mega)]
        return np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])

    def next(self) -> np.ndarray:
        if self._order is None:
            self._order = self._make_order()
        if self.pos >= self.n:
            self.epoch += 1
            self.pos = 0
            self._order = self._make_order()
        idx = self._order[self.pos : self.pos + self.batch_size]
        self.pos += len(idx)
        return idx

    def batches_per_epoch(self) -> int:
        return -(-self.n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = None
