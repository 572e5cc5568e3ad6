"""benchmarks/scaling.py's smallest path (--quick) on the tiny random BERT: the results JSON's shape, a row for
every (encoder, T) with its ratios, and the markdown table. Never a timing assertion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    """benchmarks/scaling.py."""
    yield from load_script("scaling.py")


@pytest.mark.slow  # four measurement subprocesses, each importing torch and mtfuse
def test_quick_run_on_the_tiny_model(
    bench, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path
) -> None:
    out = tmp_path / "scaling.json"
    work = tmp_path / "work"
    argv = ["--quick", "--model", str(tiny_model_dir), "--data-dir", str(shared_data_dir)]
    bench.main([*argv, "--work-dir", str(work), "--output", str(out)])
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["benchmark"] == "scaling" and result["settings"]["quick"]
    assert {"torch", "transformers", "mtfuse"} <= set(result["versions"])
    assert result["command"].startswith(".venv/bin/python benchmarks/scaling.py --quick")
    counts = result["settings"]["task_counts"]
    assert counts == [1, 2]
    assert set(result["encoders"]) == {"small", "large"}
    assert result["encoders"]["large"]["shape"]["num_hidden_layers"] == 2  # --quick: a tiny "large" one
    load = result["load_average"]
    assert 0 <= load["min"] <= load["max"] and len(load["start"]) == 3

    # one row per (encoder, T), every figure present, ratios against T=1 and against the small encoder
    rows = {(r["encoder"], r["T"]): r for r in result["rows"]}
    assert set(rows) == {(e, T) for e in ("small", "large") for T in counts}
    for (enc, T), r in rows.items():
        assert "error" not in r, r
        assert r["step_mode"] == "sampled" and r["tasks"] == bench.TASK_ORDER[:T]
        for k in bench.MEASURES:
            assert r[k] > 0, k
            assert k in r["vs_T1"]
        assert r["vs_T1"]["step_ms"] == pytest.approx(r["step_ms"] / rows[(enc, 1)]["step_ms"], rel=1e-3)
        assert r["eval_examples"] == 16 * T and r["train_examples"] == 32 * T
        assert r["steps_timed"] == 2
        assert ("vs_small" in r) == (enc == "large")
        if enc == "large":  # both ran steps 2 and 3 on the same batches
            assert r["vs_small"]["step_same_batches"] > 0
    assert rows[("large", 1)]["parameters"] > rows[("small", 1)]["parameters"]

    # the raw measurements: one per cell, each with its steps, the tasks they drew and the load
    assert len(result["runs"]) == 4
    for run in result["runs"]:
        assert len(run["step_ms_each"]) == len(run["step_tasks_each"]) == 2
        assert set(run["step_ms_per_task"]) <= set(run["tasks"])
        assert all(t in run["tasks"] for t in run["step_tasks_each"])
        assert run["steps_stamped"] == 3  # 1 warm-up + 2 timed optimizer steps
        assert len(run["load_average_start"]) == len(run["load_average_end"]) == 3
        assert run["threads"] == 1
        assert not (work / f"sampled-{run['encoder']}-T{run['T']}-r0" / "run").exists()  # deleted

    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "Step mode `sampled`" in md and "large (random) over small" in md
    assert md.count("\n| small |") == 2 and md.count("\n| large (random) |") == 2
