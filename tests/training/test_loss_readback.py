"""Task losses are read back to the host in one go at a log record, an epoch end or a checkpoint, never one
`.item()` per step (which waits for the device every step); the values are exactly what `.item()` gives."""

from __future__ import annotations

import pytest
import torch

from mtfuse.training.state import LoopState, Resumable


def bare_state(tasks: list[str]) -> Resumable:
    r = Resumable.__new__(Resumable)  # only the loss bookkeeping is exercised: no model, optimizer, ...
    r.loop = LoopState()
    r.running = {n: [] for n in tasks}
    r.pending = {}
    return r


def test_add_losses_does_not_read_back_and_flush_gives_the_item_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = torch.Generator().manual_seed(0)
    steps = [
        {"a": torch.rand((), generator=g) * 3, "b": (torch.rand((), generator=g) * 2).to(torch.bfloat16)}
        for _ in range(7)
    ]
    steps.append({"a": torch.tensor(float("nan"))})  # a task may be missing from a step; NaN comes through
    want_a = [s["a"].item() for s in steps]
    want_b = [s["b"].item() for s in steps if "b" in s]

    r = bare_state(["a", "b"])

    def no_sync(self: torch.Tensor) -> float:
        raise AssertionError(".item() called while adding losses")

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "item", no_sync)
        for s in steps:
            r.add_losses(s)
    assert r.running == {"a": [], "b": []} and r.loop.epoch_losses == {}
    r.flush_losses()
    assert r.running["a"][:-1] == want_a[:-1] and r.running["a"][-1] != r.running["a"][-1]  # NaN
    assert r.running["b"] == want_b
    total_b = 0.0
    for v in want_b:
        total_b += v
    assert r.loop.epoch_losses["b"] == [total_b, len(want_b)]
    assert r.loop.epoch_losses["a"][1] == len(want_a)
    r.flush_losses()  # nothing pending: nothing changes
    assert len(r.running["a"]) == len(want_a) and r.pending == {}
