"""benchmarks/ensemble_variants.py on synthetic member runs: every variant scored, out-of-fold, beside the two
best-member references; the plain mean recomputed by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from tests.helpers.fusion import cls_task, fake_run

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "ensemble_variants", ROOT / "benchmarks/ensemble_variants.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ensemble_variants_on_member_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gold = {t: rng.integers(0, 2, 60) for t in ("a", "b")}
    probs: dict[str, list[np.ndarray]] = {"a": [], "b": []}
    runs = []
    for m, quality in enumerate((0.8, 0.7, 0.65)):
        tasks = {}
        for t, g in gold.items():
            right = rng.random(60) < quality
            p1 = np.where(right == (g == 1), rng.uniform(0.55, 0.95, 60), rng.uniform(0.05, 0.45, 60))
            probs[t].append(p1)
            tasks[t] = cls_task(p1, g)
        runs.append(fake_run(tmp_path / f"s{m}" / "mtl", tasks))
    out_dir = tmp_path / "results"
    argv = ["--name", "smoke", "--seed", "3", "--tasks", "a,b", "--output-dir", str(out_dir), *map(str, runs)]
    assert _load().main(argv) == 0

    res = json.loads((out_dir / "ensemble_variants-smoke.json").read_text())
    assert res["seed"] == 3 and set(res["per_task"]) == {"a", "b"}
    for t, row in res["per_task"].items():
        assert list(row["members"]) == ["s0/mtl", "s1/mtl", "s2/mtl"]
        accs = [float(((p > 0.5) == (gold[t] == 1)).mean()) * 100 for p in probs[t]]
        assert list(row["members"].values()) == accs
        assert row["oracle_best_member"] == max(accs) >= row["select_best_oof"]
        mean = np.mean(probs[t], axis=0)
        assert row["mean"] == float(((mean > 0.5) == (gold[t] == 1)).mean()) * 100
        for v in ("caruana", "caruana_bagged", "caruana_sorted", "weighted_metric", "weighted_nll"):
            assert 0.0 <= row[v] <= 100.0
    assert res["average"]["mean"] == np.mean([res["per_task"][t]["mean"] for t in ("a", "b")])
