"""benchmarks/generation_profile.py's training step: one system in its own ``mtfuse train`` process, resumed
when its config is unchanged, with the count of distinct decoded texts (the packaged MiniLM, a few steps)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def gp() -> Iterator[ModuleType]:
    yield from load_script("generation_profile.py")


@pytest.mark.slow
def test_a_system_trains_in_its_own_process_and_a_rerun_keeps_it(
    gp: ModuleType, tmp_path: Path, shared_data_dir: Path
) -> None:
    size = {"train": 16, "eval": 4, "steps": 2, "new_tokens": 4, "batch": 4}
    cfg = gp.config([gp.tasks(shared_data_dir, 4)["multi30k"]], size, 2, tmp_path / "cache", 1e-4)
    first = gp.train(tmp_path, "m", cfg, 1)
    assert first["trained_in_this_call"] and set(first["metrics"]["multi30k"]) == {"bleu", "chrf", "gen_len"}
    texts = [
        json.loads(x)["text"] for x in (tmp_path / "m/predictions/multi30k.jsonl").read_text().splitlines()
    ]
    assert len(texts) == 4 and first["distinct_outputs"] == {"multi30k": len(set(texts))}
    again = gp.train(tmp_path, "m", cfg, 1)  # the same config: kept, with its recorded time
    assert not again["trained_in_this_call"] and again["wall_seconds"] == first["wall_seconds"]
    changed = gp.train(tmp_path, "m", {**cfg, "train": {**cfg["train"], "lr": 2e-4}}, 1)
    assert changed["trained_in_this_call"]  # another config: trained again, over the old run
    bad = {**cfg, "train": {**cfg["train"], "lr": -1.0}}
    with pytest.raises(SystemExit, match="mtfuse train failed"):
        gp.train(tmp_path, "m", bad, 1)
