"""Per-task batch order: seeded, resumable from two integers (epoch, position), optional length grouping;
and the dynamic padding of encoder inputs every collate shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class BatchStream:
    """Endless batches of example indices for one task's train split.

    The order of epoch ``e`` is a pure function of (seed, e), so the state is just (epoch, position).
    With ``group_by_length``, each mega-batch of 50 batches is sorted by length (as Hugging Face's
    LengthGroupedSampler does) so batches hold similar lengths and padding is small; the batches then come in
    a seeded random order within their mega-batch (not long to short), the short last batch of the epoch last.
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
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(self.n)
        if not self.group:
            return perm
        b, mega = self.batch_size, self.MEGA * self.batch_size
        out = []
        for i in range(0, self.n, mega):
            c = perm[i : i + mega]
            c = c[np.argsort(-self.lengths[c], kind="stable")]
            full = len(c) // b  # only the epoch's last mega-batch may end in a short batch: it stays last
            out += [c[j * b : (j + 1) * b] for j in rng.permutation(full)] + [c[full * b :]]
        return np.concatenate(out)

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


def pad_inputs(
    input_ids: list[np.ndarray], token_type_ids: list[np.ndarray] | None, idx: list[int], pad_id: int
) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` (and ``token_type_ids``) of the sequences ``idx``, padded to the
    longest of them (dynamic padding)."""
    n = max(len(input_ids[i]) for i in idx)
    ids = torch.full((len(idx), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), n), dtype=torch.long)
    tt = torch.zeros((len(idx), n), dtype=torch.long) if token_type_ids is not None else None
    for r, i in enumerate(idx):
        L = len(input_ids[i])
        ids[r, :L] = torch.from_numpy(input_ids[i])
        mask[r, :L] = 1
        if tt is not None:
            tt[r, :L] = torch.from_numpy(token_type_ids[i])  # type: ignore[index]
    batch = {"input_ids": ids, "attention_mask": mask}
    if tt is not None:
        batch["token_type_ids"] = tt
    return batch
