"""benchmarks/quality_profile.py mlm: masked LM as an auxiliary task on each task's own train rows, tiny, on
the CPU through the mtfuse CLI; its config is the profile's plus one masked_lm task per task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.benchmarks.conftest import smoke_sets


def test_mlm_config_adds_one_task_per_task_on_its_rows(qp, tmp_path: Path, shared_data_dir: Path) -> None:
    from mtfuse import config

    path = qp.mlm_config(tmp_path)
    cfg = config.load(path, [f"data_dir={shared_data_dir}"])
    profile = config.load(qp.CONFIG, [f"data_dir={shared_data_dir}"])
    assert cfg.tasks[: len(qp.TASKS)] == profile.tasks and (cfg.train, cfg.subset) == (
        profile.train,
        profile.subset,
    )
    aux = {t.name: t for t in cfg.tasks[len(qp.TASKS) :]}
    assert sorted(aux) == sorted(f"{t}_mlm" for t in qp.TASKS)
    for t in qp.TASKS:
        a = aux[f"{t}_mlm"]
        assert (a.type, a.subset_as, a.data) == ("masked_lm", t, cfg.tasks[qp.TASKS.index(t)].data)
        assert len(a.text_fields) == (1 if t == "cola" else 2)


@pytest.mark.slow
def test_mlm_smoke_run(qp, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path) -> None:
    before = sorted(qp.RESULTS.glob("quality_profile-mlm*"))
    sets = smoke_sets(tmp_path, tiny_model_dir, shared_data_dir, steps=4)
    qp.main(["mlm", "--seed", "1", "--work", str(tmp_path), *(a for s in sets for a in ("--set", s))])

    out = json.loads((tmp_path / "quality_profile-mlm-s1-smoke.json").read_text())
    assert out["overrides"] == sets and out["command"].startswith(
        "benchmarks/quality_profile.py mlm --seed 1"
    )
    assert set(out["systems"]) == {"single-task", "mtl-equal", "mtl-equal + mlm"}
    assert set(out["perplexity"]) == {f"{t}_mlm" for t in qp.TASKS}
    assert all(math.isfinite(p) and p > 1 for p in out["perplexity"].values())
    for name in ("mtl-equal", "mtl-equal + mlm"):
        r = out["systems"][name]
        assert set(r["tasks"]) == set(qp.TASKS) and r["average"] == pytest.approx(
            sum(r["tasks"].values()) / 4
        )
        assert r["train_seconds"] > 0 and r["steps"] == 4
    assert out["delta_vs_mtl_equal"]["average"] == pytest.approx(
        out["systems"]["mtl-equal + mlm"]["average"] - out["systems"]["mtl-equal"]["average"]
    )
    s1 = tmp_path / "s1"
    cfg = yaml.safe_load((s1 / "mtl-mlm" / "config.yaml").read_text())
    assert [t["name"] for t in cfg["tasks"]] == [*qp.TASKS, *(f"{t}_mlm" for t in qp.TASKS)]
    assert cfg["train"]["max_steps"] == 4 and cfg["train"]["seed"] == 1
    assert (tmp_path / "quality_profile-mlm-s1-smoke.md").read_text().count("| mtl-equal") == 2
    assert sorted(qp.RESULTS.glob("quality_profile-mlm*")) == before  # a smoke run never writes results/
