"""benchmarks/trainer_throughput.py end to end on a tiny random BERT: both tools timed over the same window of
the same batches (the mtfuse stamps come from the loop's step-end hook, which must fire at both ends)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def tt() -> Iterator[ModuleType]:
    yield from load_script("trainer_throughput.py")


def test_trainer_throughput_times_both_tools_over_the_same_steps(
    tt: ModuleType, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path
) -> None:
    out = tmp_path / "tt.json"
    tt.main(
        ["--model", str(tiny_model_dir), "--data-dir", str(shared_data_dir), "--steps", "3", "--warmup", "2",
         "--batch-size", "4", "--max-length", "32", "--precision", "fp32", "--cpu", "--repeats", "2",
         "--work-dir", str(tmp_path / "work"), "--output", str(out)]
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert len(res["repeats"]) == 2
    for rep in res["repeats"]:
        assert rep["trainer"]["same_batches_as_mtfuse"] is True
        for tool in ("mtfuse", "trainer"):
            t = rep[tool]["timed_seconds"]
            assert t > 0 and rep[tool]["samples_per_second"] == pytest.approx(
                3 * 4 / t, abs=12 * 0.0005 / t**2 + 0.01
            )
        assert rep["ratio"] == round(
            rep["mtfuse"]["samples_per_second"] / rep["trainer"]["samples_per_second"], 3
        )
    assert res["settings"]["precision"] == {"mtfuse": "no", "trainer": "fp32"}
    assert "step-end hook" in res["settings"]["mtfuse_timing"]
    import mtfuse.train as loop
    from mtfuse.checkpoint import fault_point

    assert loop.fault_point is fault_point  # the hook is put back
