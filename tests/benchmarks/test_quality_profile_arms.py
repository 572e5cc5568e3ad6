"""benchmarks/quality_profile.py grouping (and precision, which shares its code): two arms per seed, tiny, on the
CPU through the mtfuse CLI; the result names both arms, their paired differences and the seed-noise verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.benchmarks.conftest import smoke_sets


@pytest.mark.slow
def test_grouping_smoke_run(qp, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path) -> None:
    before = sorted(qp.RESULTS.glob("quality_profile-grouped*"))
    sets = smoke_sets(tmp_path, tiny_model_dir, shared_data_dir, steps=3)
    argv = ["grouping", "--seeds", "1,2", "--work", str(tmp_path), *(a for s in sets for a in ("--set", s))]
    qp.main(argv)

    out = json.loads((tmp_path / "quality_profile-grouped-smoke.json").read_text())
    assert out["benchmark"] == "quality_profile grouping" and out["seeds"] == [1, 2]
    assert set(out["arms"]) == {"bf16", "grouped"}
    for arm in out["arms"].values():
        assert set(arm) == {"1", "2"} and all(
            r["precision"] == "bf16" and r["steps"] == 3 for r in arm.values()
        )
    avg = out["summary"]["average"]
    paired = [out["arms"]["grouped"][s]["average"] - out["arms"]["bf16"][s]["average"] for s in ("1", "2")]
    assert avg["paired_differences"] == pytest.approx(paired)
    assert avg["difference"] == pytest.approx(sum(paired) / 2)
    assert avg["within_seed_noise"] == (abs(avg["difference"]) <= avg["seed_noise"])
    for seed in (1, 2):
        grouped = yaml.safe_load(
            (tmp_path / f"s{seed}" / "mtl-equal-bf16-grouped" / "config.yaml").read_text()
        )
        plain = yaml.safe_load((tmp_path / f"s{seed}" / "mtl-equal-bf16" / "config.yaml").read_text())
        assert grouped["train"]["group_by_length"] is True and plain["train"]["group_by_length"] is False
    assert "| grouped − bf16 |" in (tmp_path / "quality_profile-grouped-smoke.md").read_text()
    assert sorted(qp.RESULTS.glob("quality_profile-grouped*")) == before  # a smoke run never writes results/
