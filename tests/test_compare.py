"""`mtfuse compare`: runs, ensembles and stacks side by side from run directories and results files."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from mtfuse import report
from mtfuse.compare import build_comparison, compare_command, load_entry
from mtfuse.errors import MtfuseError
from mtfuse.fusion import ensemble as E
from mtfuse.fusion.ensemble.members import load_all
from mtfuse.report import markdown
from tests.helpers.fusion import cls_task, fake_run, no_partial_output, trained_runs

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, shared_data_dir: Path
) -> dict[str, Path]:
    return trained_runs(tmp_path_factory.getbasetemp() / "fusion_runs", tiny_model_dir, shared_data_dir)


def snapshot(paths: list[Path]) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for root in paths for p in sorted(root.rglob("*"))}


def fake_systems(tmp_path: Path) -> dict[str, Path]:
    """Fake single-task runs of tasks a and b, a multi-task run of both, an ensemble of the multi-task run."""
    gold = np.array([0, 1] * 10)
    good, bad = np.where(gold == 1, 0.8, 0.2), np.where(gold == 1, 0.4, 0.6)
    out = {
        "st_a": fake_run(tmp_path / "st_a", {"a": cls_task(good, gold)}, params=100),
        "st_b": fake_run(tmp_path / "st_b", {"b": cls_task(good, gold)}, params=100),
        "mt": fake_run(tmp_path / "mt", {"a": cls_task(good, gold), "b": cls_task(bad, gold)}, params=110),
    }
    for name in out:  # the fake runs' metrics: recompute them from their predictions
        _, arrays = load_all([out[name]])
        metrics = {t: ta.score(ta.P[0]) for t, ta in arrays.items()}
        rec = json.loads((out[name] / "metrics.json").read_text())
        rec["tasks"] = metrics
        (out[name] / "metrics.json").write_text(json.dumps(rec))
    E.ensemble_command([out["mt"], out["st_a"]], tmp_path / "ens", method="mean")
    out["ens"] = tmp_path / "ens"
    return out


def test_compare_puts_every_kind_side_by_side(tmp_path: Path) -> None:
    systems = fake_systems(tmp_path)
    before = snapshot(list(systems.values()))
    buf = StringIO()
    out = tmp_path / "cmp"
    result = compare_command(list(systems.values()), out, latency=0, console=Console(file=buf, width=160))
    assert snapshot(list(systems.values())) == before  # reads only; never retrains or rewrites
    assert sorted(p.name for p in out.iterdir()) == [".mtfuse.json", "compare.json", "compare.md", "plots"]
    for png in ("scores.png", "score_vs_cost.png"):
        assert (out / "plots" / png).read_bytes()[:8] == PNG
    assert json.loads((out / "compare.json").read_text()) == json.loads(json.dumps(result))
    rows = {r["name"]: r for r in result["entries"]}
    assert [r["kind"] for r in result["entries"]] == ["single-task", "single-task", "multi-task", "ensemble"]
    assert result["tasks"] == ["a", "b"] and result["common_tasks"] == []
    assert result["reference"]["a"] == {"score": 100.0, "runs": ["st_a"], "how": "mean"}
    assert result["reference_method"] == "mean" and result["same_tasks"] is False
    assert rows["st_a"]["normalised"]["a"] == pytest.approx(100.0)
    assert rows["mt"]["normalised"]["b"] == pytest.approx(0.0)  # the multi-task run's b is always wrong
    assert rows["mt"]["delta"]["b"] == pytest.approx(-100.0)
    # no task is common to all systems: no comparable average; each system's own one is kept apart
    assert rows["mt"]["common_average"] is None and rows["mt"]["normalised_average"] is None
    assert rows["mt"]["average"] == pytest.approx(50.0) and rows["mt"]["tasks"] == ["a", "b"]
    assert rows["mt"]["normalised_own_average"] == pytest.approx(50.0)
    assert rows["ens"]["cost"]["parameters"] == 210 and rows["ens"]["cost"]["members"] == 2
    assert rows["ens"]["cost"]["train_seconds"] == pytest.approx(4.0)
    assert rows["mt"]["cost"]["latency_ms_per_example"] == {"b1": None, "b32": None}
    md = (out / "compare.md").read_text()
    header = (
        "| system | kind | a accuracy | b accuracy | average (no task is common to all systems) "
        "| average of own tasks (n/N) |"
    )
    assert header in md
    assert "## Normalised to single-task (%)" in md and "## Cost" in md
    assert "| a | 100.00 | mean | st_a |" in md  # the reference of each task, and the runs it comes from
    assert "| mt | multi-task | 100.00 | 0.00 | – | 50.00 (2/2) |" in md
    assert "| st_a | single-task | 100.00 | – | – | 100.00 (1/2) |" in md
    printed = buf.getvalue()
    assert "Comparison" in printed and str(out) in printed
    assert "latency not measured (pass --latency N" in printed


def test_results_files_and_folders_of_runs(tmp_path: Path) -> None:
    systems = fake_systems(tmp_path / "runs")
    (systems["st_b"] / "metrics.json").rename(systems["st_b"] / "metrics-dev.json")  # `mtfuse evaluate`'s
    results = json.loads((systems["mt"] / "results.json").read_text())
    results["kind"] = "merged"
    (tmp_path / "merged.json").write_text(json.dumps(results))
    result = compare_command([tmp_path / "runs", tmp_path / "merged.json"], tmp_path / "cmp", latency=0)
    names = [r["name"] for r in result["entries"]]
    assert sorted(names) == ["ens", "merged", "mt", "st_a", "st_b"]
    st_b = next(r for r in result["entries"] if r["name"] == "st_b")
    assert st_b["metrics"] == {"b": {"accuracy": 100.0}}  # from metrics-dev.json, not results.json's zeros
    assert [r["kind"] for r in result["entries"]].index("merged") == 3  # after single- and multi-task runs
    assert load_entry(systems["mt"] / "results.json").name == "mt"


def test_bad_compare_inputs(tmp_path: Path) -> None:
    systems = fake_systems(tmp_path)
    out = tmp_path / "cmp"
    with pytest.raises(MtfuseError, match="nope: not found"):
        compare_command([tmp_path / "nope"], out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MtfuseError, match="empty: neither a run directory nor a folder of runs"):
        compare_command([tmp_path / "empty"], out)
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(MtfuseError, match="junk.json: not a results file"):
        compare_command([tmp_path / "junk.json"], out)
    (systems["st_b"] / "metrics.json").unlink()
    (systems["st_b"] / "results.json").write_text("{}")
    with pytest.raises(
        MtfuseError, match=r"st_b: no dev metrics \(metrics.json, metrics-dev.json or results.json\)"
    ):
        compare_command([systems["st_a"], systems["st_b"]], out)
    with pytest.raises(MtfuseError, match="--latency must be >= 0"):
        compare_command([systems["st_a"]], out, latency=-1)
    no_partial_output(out)
    compare_command([systems["st_a"]], out, latency=0)
    with pytest.raises(
        MtfuseError, match="cmp: already holds an output of `mtfuse compare`; pass --overwrite"
    ):
        compare_command([systems["st_a"]], out, latency=0)
    compare_command([systems["st_a"], systems["mt"]], out, latency=0, overwrite=True)
    assert len(json.loads((out / "compare.json").read_text())["entries"]) == 2


def test_normalisation_needs_a_positive_reference() -> None:
    from mtfuse.compare import Entry

    entries = [
        Entry("st", Path("st"), "single-task", {"a": {"matthews": 0.0}}, {}),
        Entry("mt", Path("mt"), "multi-task", {"a": {"matthews": 10.0}}, {}),
    ]
    rows = {r["name"]: r for r in build_comparison(entries)["entries"]}
    assert rows["mt"]["normalised"]["a"] is None and rows["mt"]["delta"]["a"] == pytest.approx(10.0)
    assert "– |" in markdown(build_comparison(entries))


def test_real_runs_with_latency(runs: dict[str, Path], tmp_path: Path) -> None:
    """Latency is measured per run and task; an ensemble's is the sum of its members'."""
    ens = tmp_path / "ens"
    E.ensemble_command([runs["st"], runs["mt1"]], ens, method="weighted_nll", folds=3)
    result = compare_command([runs["st"], runs["mt1"], ens], tmp_path / "cmp", latency=2, repeats=1)
    rows = {r["name"]: r for r in result["entries"]}
    assert [r["kind"] for r in result["entries"]] == ["single-task", "multi-task", "ensemble"]
    assert result["common_tasks"] == ["sst2"] and result["reference"]["sst2"]["runs"] == ["st"]
    for name in ("st", "mt1"):
        lat = rows[name]["cost"]["latency_per_task"]
        assert set(lat) == ({"sst2"} if name == "st" else {"sst2", "stsb", "conll"})
        assert all(v["b1"] > 0 and v["b32"] > 0 for v in lat.values())
        assert rows[name]["cost"]["parameters"] > 0 and rows[name]["cost"]["train_seconds"] > 0
    assert rows["st"]["normalised"]["sst2"] == pytest.approx(100.0) or rows["st"]["task_scores"]["sst2"] == 0
    e = rows["ens"]["cost"]["latency_per_task"]
    assert set(e) == {"sst2"}
    for b in ("b1", "b32"):
        total = sum(rows[m]["cost"]["latency_per_task"]["sst2"][b] for m in ("st", "mt1"))
        assert e["sst2"][b] == pytest.approx(total, abs=2e-3)
    assert (
        rows["ens"]["cost"]["parameters"]
        == rows["st"]["cost"]["parameters"] + rows["mt1"]["cost"]["parameters"]
    )
    assert rows["ens"]["notes"] == []
    assert (tmp_path / "cmp" / "plots" / "score_vs_cost.png").read_bytes()[:8] == PNG


# ------------------------------------------------------------------- reading rules (issue 15 section 7)


def _entry(name: str, kind: str, scores: dict[str, float], **cost: Any) -> Any:
    from mtfuse.compare import Entry

    return Entry(name, Path(name), kind, {t: {"accuracy": v} for t, v in scores.items()}, dict(cost))


def _systems() -> list[Any]:
    return [
        _entry("st_a1", "single-task", {"a": 80.0}, parameters=100),
        _entry("st_a2", "single-task", {"a": 100.0}, parameters=100),
        _entry("st_b", "single-task", {"b": 50.0}, parameters=100),
        _entry("mt", "multi-task", {"a": 90.0, "b": 40.0}, parameters=110),
        _entry("mt_a", "multi-task", {"a": 85.0}, parameters=110),
    ]


def test_averages_over_different_task_sets_are_never_mixed() -> None:
    entries = _systems()
    cmp = build_comparison(entries[3:])  # mt (a, b) and mt_a (a): common task a
    rows = {r["name"]: r for r in cmp["entries"]}
    assert cmp["common_tasks"] == ["a"] and cmp["same_tasks"] is False
    assert rows["mt"]["common_average"] == 90.0 and rows["mt"]["average"] == 65.0  # own tasks, kept apart
    md = markdown(cmp)
    assert "| system | kind | a accuracy | b accuracy | average (a) | average of own tasks (n/N) |" in md
    assert "| mt | multi-task | 90.00 | 40.00 | 90.00 | 65.00 (2/2) |" in md
    text = report.terminal(cmp)
    assert "avg common" in text and "avg own (n/N)" in text and "over the tasks every system has (a)" in text
    # the figure: the common-task average, then one row per task (the systems' tasks differ)
    assert report.score_cost_rows(cmp) == [("average score over a", None), ("a score", "a"), ("b score", "b")]
    same = build_comparison(
        [_entry("x", "multi-task", {"a": 1.0, "b": 2.0}), _entry("y", "merged", {"a": 3.0, "b": 4.0})]
    )
    assert (
        same["same_tasks"] is True
        and "own tasks" not in markdown(same)
        and "avg own" not in report.terminal(same)
    )
    assert "| system | kind | a accuracy | b accuracy | average (all tasks) |" in markdown(same)
    assert report.score_cost_rows(same) == [("average score over all tasks", None)]


def test_normalisation_names_its_reference() -> None:
    mean = build_comparison(_systems())
    best = build_comparison(_systems(), reference="best")
    assert mean["reference"]["a"] == {"score": 90.0, "runs": ["st_a1", "st_a2"], "how": "mean"}
    assert best["reference"]["a"] == {"score": 100.0, "runs": ["st_a2"], "how": "best"}
    rows = {r["name"]: r for r in best["entries"]}
    assert rows["mt"]["normalised"] == {"a": pytest.approx(90.0), "b": pytest.approx(80.0)}
    assert "### References (best single-task run per task)" in markdown(best)
    assert "| a | 100.00 | best | st_a2 |" in markdown(best)
    assert "a = 90.00 (mean of st_a1, st_a2)" in report.terminal(mean, width=200)
    with pytest.raises(MtfuseError, match="unknown reference 'median'"):
        build_comparison(_systems(), reference="median")


def test_compare_refuses_an_unknown_reference(tmp_path: Path) -> None:
    systems = fake_systems(tmp_path)
    with pytest.raises(MtfuseError, match="--reference must be one of mean, best"):
        compare_command([systems["st_a"]], tmp_path / "cmp", reference="median")
    no_partial_output(tmp_path / "cmp")


@pytest.mark.parametrize("width", [80, 100])
def test_terminal_tables_fit_the_width(width: int) -> None:
    tasks = [f"task_with_a_long_name_{i}" for i in range(12)]
    entries = [
        _entry(
            f"a-very-long-system-name-number-{i}-of-many",
            kind,
            {t: 10.0 * i + j for j, t in enumerate(tasks)},
        )
        for i, kind in enumerate(["single-task", "multi-task", "merged", "ensemble", "stack", "multi-task"])
    ]
    entries.append(
        _entry("partial", "multi-task", {tasks[0]: 55.5}, parameters=3_000_000, train_seconds=12.5)
    )
    text = report.terminal(build_comparison(entries), width=width)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width, max(lines, key=len)
    assert "Task scores (1/" in text  # the task columns are split over several tables
    for e in entries:  # every system appears in every chunk of every table
        short = e.name if len(e.name) <= 20 else e.name[:19]
        assert text.count(short) >= 3
    assert "3.0M" in text and "12.5" in text


def test_terminal_output_of_compare_fits_80_columns(tmp_path: Path) -> None:
    systems = fake_systems(tmp_path)
    buf = StringIO()
    compare_command(list(systems.values()), tmp_path / "cmp", console=Console(file=buf, width=80))
    assert max(len(x) for x in buf.getvalue().splitlines()) <= 80


@pytest.mark.parametrize("n", [1, 5, 10, 11, 20, 21, 40, 100])
def test_every_system_gets_its_own_colour(n: int) -> None:
    colours = report.system_colours(n)
    assert len(colours) == n
    assert len({tuple(round(c, 3) for c in rgb) for rgb in colours}) == n


def test_plots_with_many_systems_and_disjoint_tasks(tmp_path: Path) -> None:
    entries = [
        _entry(
            f"s{i}",
            ["single-task", "multi-task", "merged"][i % 3],
            {f"t{i % 4}": float(i)},
            parameters=10 + i,
        )
        for i in range(25)
    ]
    cmp = build_comparison(entries)
    assert cmp["common_tasks"] == []
    assert sorted(task for _, task in report.score_cost_rows(cmp)) == ["t0", "t1", "t2", "t3"]
    report.plot_task_bars(cmp, tmp_path / "bars.png")
    report.plot_score_vs_cost(cmp, tmp_path / "cost.png")
    assert (tmp_path / "bars.png").read_bytes()[:8] == PNG and (tmp_path / "cost.png").read_bytes()[:8] == PNG


def test_latency_is_not_measured_by_default() -> None:
    import inspect

    assert inspect.signature(compare_command).parameters["latency"].default == 0
