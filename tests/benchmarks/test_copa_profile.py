"""benchmarks/copa_profile.py end to end on a tiny random model: both systems, every seed, the baselines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def copa() -> Iterator[ModuleType]:
    yield from load_script("copa_profile.py")


def test_copa_profile_runs_both_systems_on_every_seed(
    copa: ModuleType, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path, one_thread: None
) -> None:
    out = tmp_path / "copa.json"
    argv = ["--data-dir", str(shared_data_dir), "--model", str(tiny_model_dir), "--steps", "2"]
    argv += ["--train", "16", "--eval", "8", "--seeds", "1", "2"]
    argv += ["--work-dir", str(tmp_path / "runs"), "--output", str(out)]
    result = copa.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))

    # "always the first alternative", counted from the XML here
    xml = (shared_data_dir / "copa/COPA-resources/datasets/copa-test.xml").read_text()
    answers = re.findall(r'most-plausible-alternative="([12])"', xml)
    assert len(answers) == result["baselines"]["test_examples"] == 500
    first = 100 * answers.count("1") / len(answers)
    assert result["baselines"]["first_alternative"]["accuracy"] == pytest.approx(first, abs=0.01)

    for key, tasks, steps in (("single_task", ["copa"], 2), ("mix_rte_conll", ["copa", "rte", "conll"], 6)):
        system = result[key]
        assert system["tasks"] == tasks
        assert [r["seed"] for r in system["runs"]] == [1, 2]
        accs = [r["copa_test_accuracy"] for r in system["runs"]]
        for r in system["runs"]:
            assert r["steps"] == steps and r["copa_test_examples"] == 500
            assert 0 <= r["copa_test_accuracy"] <= 100
            assert set(r["dev"]) == set(tasks)
            assert not (tmp_path / "runs" / f"{key}-s{r['seed']}" / "checkpoints").exists()
        assert system["copa_test_accuracy"]["mean"] == pytest.approx(sum(accs) / 2, abs=0.01)
        assert system["copa_test_accuracy"]["n"] == 2
