"""benchmarks/inference_tasks.py's smallest path (--quick) on the tiny random BERT: the results JSON's shape,
and that every side of each comparison computed the same outputs. Never a timing assertion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    """benchmarks/inference_tasks.py."""
    yield from load_script("inference_tasks.py")


def test_quick_run_on_the_tiny_model(
    bench, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path, one_thread: None
) -> None:
    out = tmp_path / "inference_tasks.json"
    work = tmp_path / "work"
    argv = ["--quick", "--model", str(tiny_model_dir), "--data-dir", str(shared_data_dir)]
    argv += ["--work-dir", str(work), "--output", str(out), "--agreement-runs", f"{work / 'mtfuse-run'}:sst2"]
    bench.main(argv)
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["benchmark"] == "inference_tasks" and result["repeats"] == 1
    assert {"torch", "transformers", "mtfuse"} <= set(result["versions"])

    # (a) forward_all over T tasks vs T single-task models: the same logits
    rows = result["tasks_vs_single_models"]["results"]
    assert [r["tasks"] for r in rows] == [1, 2]
    for r in rows:
        assert r["outputs_agree"] and r["max_abs_logit_diff"] <= 1e-4
        assert r["forward_all_samples_per_second"] > 0 and r["single_models_samples_per_second"] > 0
        assert r["ratio"] > 0 and len(r["repeats"]) == 1
        assert r["parameters_single_models"] > r["parameters_forward_all"] or r["tasks"] == 1
    assert rows[0]["goal_met"] is None and isinstance(rows[1]["goal_met"], bool)

    # (b) Predictor vs pipeline and Trainer.predict: the same labels and probabilities
    b = result["predict"]
    assert b["outputs_agree"]
    arms = b["arms"]
    assert {a["tool"] for a in arms.values()} >= {"mtfuse", "pipeline", "trainer"}
    default = arms["mtfuse Predictor (default)"]
    assert default["batch_size"] == 64 and b["settings"]["mtfuse_precision"] == "fp32"
    assert arms["pipeline (default batch 1)"]["batch_size"] == 1
    assert arms["Trainer.predict (default batch 8)"]["batch_size"] == 8
    for name, arm in arms.items():
        if "bf16" not in name:
            assert arm["argmax_agreement_with_reference"] == 1.0, name
            assert arm["max_abs_prob_diff_vs_reference"] <= 1e-3, name
        assert arm["samples_per_second"] > 0
    assert set(b["ratios_mtfuse_over"]) == set(arms) - {"mtfuse Predictor (default)"}
    assert isinstance(b["goal_met"], bool)

    # (c) fp32 vs bf16 on a run's dev split
    (c,) = result["bf16_on_trained_runs"]
    assert c["task"] == "sst2" and c["examples"] == 872
    assert 0 <= c["labels_changed"] <= c["examples"]
    assert result["summary"]
