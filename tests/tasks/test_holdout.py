"""Split 'train-holdout': the train rows outside subset.train, for choices that must not look at dev."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtfuse import rundir
from mtfuse.errors import DataError
from mtfuse.evaluate import evaluate_run
from mtfuse.tasks.prepare import HOLDOUT, holdout_rows, read_task_rows, subset_rows
from tests.helpers.fusion import make_data_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    return make_data_runs(tmp_path_factory.mktemp("holdout"), tiny_model_dir)


def test_holdout_is_the_train_rows_the_subset_left_out(runs: dict[str, Path]) -> None:
    cfg = rundir.load_run_config(runs["sent"], [])  # subset.train 24 of 40 rows, subset.eval 16
    tc = cfg.tasks[0]
    train = read_task_rows(cfg, tc.name, "train")
    kept = subset_rows(train, cfg.subset.train, cfg.subset.seed, tc.name, "train")
    held = read_task_rows(cfg, tc.name, HOLDOUT)
    assert len(train) == 40 and len(kept) == 24 and len(held) == 16
    assert {r["_where"] for r in held}.isdisjoint({r["_where"] for r in kept})
    assert held == holdout_rows(cfg, tc, train)  # the same rows every time
    assert len(holdout_rows(cfg, tc, train, cap=5)) == 5
    everything = cfg.model_copy(update={"subset": cfg.subset.model_copy(update={"train": None})})
    with pytest.raises(DataError, match="outside subset.train.*all 40 train rows"):
        read_task_rows(everything, tc.name, HOLDOUT)


def test_evaluate_scores_the_holdout_split(runs: dict[str, Path]) -> None:
    result, out = evaluate_run(runs["sent"], HOLDOUT)
    assert out == runs["sent"] / "metrics-train-holdout.json" and out.is_file()
    assert result["split"] == HOLDOUT and result["examples"] == {"sent": 16}
    dev, _ = evaluate_run(runs["sent"], "dev", output=runs["sent"] / "dev.json")
    assert dev["examples"] == {"sent": 16} and 0 <= result["tasks"]["sent"]["accuracy"] <= 100
