"""`mtfuse merge --search`: grid, parsing, selection, log and plot (on tiny hand-made runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtfuse.errors import ConfigError
from mtfuse.fusion.merge import driver, get_method
from mtfuse.fusion.merge.request import SearchSpec
from mtfuse.fusion.merge.search import default_space, grid, parse_space
from tests.helpers.cli import exit_code as run_cli
from tests.helpers.fusion import merge, search


def test_space_parsing_and_grid() -> None:
    space = parse_space("scale=[0.3, 0.5,0.7] density=[0.2,0.5]  weights=[[1,1],[2,1]]")
    assert space == {"scale": [0.3, 0.5, 0.7], "density": [0.2, 0.5], "weights": [[1, 1], [2, 1]]}
    points = grid(space)
    assert len(points) == 12 and points[0] == {"scale": 0.3, "density": 0.2, "weights": [1, 1]}
    some = grid(space, trials=5, seed=1)
    assert len(some) == 5 and all(p in points for p in some) and some == grid(space, trials=5, seed=1)
    assert parse_space("t=0.5") == {"t": [0.5]}
    assert default_space(get_method("ties")) == {"scale": [0.3, 0.5, 0.7, 1.0], "density": [0.2, 0.5]}
    with pytest.raises(ConfigError, match="no default search space"):
        default_space(get_method("fisher"))
    with pytest.raises(ConfigError, match="expected key=\\[values\\]"):
        parse_space("scale")


def test_search_picks_the_best_point_and_writes_log_and_plot(
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "ta"
    argv = ["merge", str(runs["sent"]), str(runs["topic"]), "--method", "task_arithmetic", "-o", str(out)]
    assert run_cli([*argv, "--search-space", "scale=[0.3,0.6,1.0]", "--no-evaluate"]) == 0
    log = json.loads((out / "search.json").read_text())
    averages = [p["average"] for p in log["points"]]
    assert [p["point"]["scale"] for p in log["points"]] == [0.3, 0.6, 1.0]
    best = log["best"]
    assert best["average"] == max(averages) and best["index"] == averages.index(max(averages))
    assert log["split"] == "dev" and "optimistic" in log["note"] and log["strategy"] == "grid"
    png = (out / "search.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    record = json.loads((out / "merge.json").read_text())
    assert record["params"]["scale"] == best["point"]["scale"] == record["search"]["best_point"]["scale"]
    # the written model is the plain merge at the selected point
    merge([runs["sent"], runs["topic"]], "task_arithmetic", tmp_path / "direct", best["params"])
    a, b = (
        load_file(str(out / "model/model.safetensors")),
        load_file(str(tmp_path / "direct/model/model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    # data-dependent method: its statistics are computed once for the whole grid
    calls: list[str] = []
    real = driver.compute_stats
    monkeypatch.setattr(driver, "compute_stats", lambda kind, ctx: calls.append(kind) or real(kind, ctx))
    spec = SearchSpec(space={"alpha": [0.5, 1.0]})
    _, slog = search([runs["sent"], runs["topic"]], "regmean", tmp_path / "rm", spec, {"gram_examples": 4})
    assert calls == ["gram"] and len(slog["points"]) == 2


def test_search_over_weights_on_held_out_train_rows(runs: dict[str, Path], tmp_path: Path) -> None:
    pair = [runs["sent"], runs["score"]]
    spec = SearchSpec(space={"weights": [[1, 1], [3, 1]]}, split="train-holdout")
    record, log = search(pair, "linear", tmp_path / "lin", spec)
    assert log["split"] == "train-holdout" and "unbiased" in log["note"]
    assert [p["weights"] for p in log["points"]] == [[1.0, 1.0], [3.0, 1.0]]
    assert record["weights"] == log["best"]["weights"]
    assert (tmp_path / "lin" / "search.png").is_file()
    with pytest.raises(ConfigError, match="selects its ingredients on data itself"):
        search(pair, "greedy_soup", tmp_path / "x", SearchSpec(space={"split": ["dev"]}))
    with pytest.raises(ConfigError, match="has no parameter 'density'"):
        search(pair, "linear", tmp_path / "x", SearchSpec(space={"density": [0.5]}))
    with pytest.raises(ConfigError, match="must be a list of 2 numbers"):
        search(pair, "linear", tmp_path / "x", SearchSpec(space={"weights": [[1, 1, 1]]}))
    assert not (tmp_path / "x").exists()
