"""`mtfuse merge --search`: tune a merge method's hyperparameters on held-out data, then write the best merge.

The search is a grid (every combination of the listed values; ``trials`` = N evaluates a seeded random N of
them instead). Each point is merged in memory with the streaming driver and scored on ``split`` of every
task with the inputs' heads; the point with the highest average score (the GLUE-style mean over tasks of
``mtfuse.metrics.aggregate``) wins, the first in grid order on a tie. The winner is then written like any
merge, with the search summary in ``merge.json`` and, in the output directory:

- ``search.json``: the space, every point's per-task and average scores, the winner, and how it was chosen;
- ``search.png``: the average score against the scaling coefficient lambda (``scale``; else the first
  numeric parameter searched), one line per combination of the other parameters, the winner starred.

Selecting on dev and reporting the same dev scores is optimistic (the winner's dev score is the maximum of
several noisy estimates); the log says so. ``split: train-holdout`` selects on train rows the runs did not
train on (runs trained on a ``subset.train``), which leaves dev as an unbiased report.

Space syntax (``--search-space``): whitespace-separated ``key=[v1,v2,...]`` items, values parsed as YAML, e.g.
``scale=[0.3,0.5,0.7,1.0] density=[0.2,0.5]``; ``weights=[[1,1],[2,1],[1,2]]`` searches per-model weights.
Without one, :data:`DEFAULT_SPACE` entries for the parameters the method has are used.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtfuse import rundir
from mtfuse.errors import ConfigError
from mtfuse.fusion.merge.driver import check_distances, distances_to_base, get_stats, merge_runs, merge_state
from mtfuse.fusion.merge.inputs import plan_merge
from mtfuse.fusion.merge.method import MergeMethod
from mtfuse.fusion.merge.request import MergeRequest
from mtfuse.fusion.merge.statistics import SPLITS, Scorer, Stats

DEFAULT_SPACE: dict[str, list[Any]] = {
    "scale": [0.3, 0.5, 0.7, 1.0],  # task-vector methods' lambda
    "density": [0.2, 0.5],  # TIES / DARE / breadcrumbs / DELLA
    "t": [0.25, 0.5, 0.75],  # slerp
    "alpha": [0.5, 0.9, 1.0],  # RegMean
}
OPTIMISTIC = (
    "the winner was selected on the dev split; its dev scores (here and from `mtfuse evaluate`) are "
    "optimistic estimates of held-out performance (the maximum over {n} noisy scores). Report test "
    "scores, or select on --search-split train-holdout."
)


def parse_space(text: str) -> dict[str, list[Any]]:
    """``'scale=[0.3,0.5] density=[0.2,0.5]'`` -> ``{"scale": [0.3, 0.5], "density": [0.2, 0.5]}``."""
    items, depth, cur = [], 0, ""
    for ch in text.strip():
        depth += (ch == "[") - (ch == "]")
        if ch.isspace() and depth == 0:
            if cur:
                items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    space: dict[str, list[Any]] = {}
    for it in items:
        key, sep, raw = it.partition("=")
        if not sep or not key:
            raise ConfigError(f"--search-space: expected key=[values], got '{it}'")
        try:
            values = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--search-space: '{it}' is not valid YAML ({e})") from None
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"--search-space: '{key}' has no values")
        space[key.strip()] = values
    if not space:
        raise ConfigError("--search-space is empty")
    return space


def default_space(m: MergeMethod) -> dict[str, list[Any]]:
    space = {k: v for k, v in DEFAULT_SPACE.items() if k in m.Params.model_fields}
    if not space:
        raise ConfigError(
            f"merge method '{m.name}' has no default search space; pass --search-space "
            f"(parameters: {', '.join(sorted(m.Params.model_fields)) or 'none'}"
            f"{', weights' if m.takes_weights else ''})"
        )
    return space


def grid(space: dict[str, list[Any]], trials: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Every combination (keys in the order given), or a seeded random ``trials`` of them, in grid order."""
    keys = list(space)
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(space[k] for k in keys))]
    if trials is not None and trials < len(points):
        keep = np.sort(np.random.default_rng(seed).choice(len(points), size=trials, replace=False))
        points = [points[i] for i in keep]
    return points


def _split_point(point: dict[str, Any]) -> tuple[dict[str, Any], list[float] | None]:
    params = {k: v for k, v in point.items() if k != "weights"}
    w = point.get("weights")
    return params, None if w is None else [float(x) for x in w]


def _check_space(m: MergeMethod, space: dict[str, list[Any]], params: dict[str, Any], n_runs: int) -> None:
    for key in space:
        if key != "weights" and key not in m.Params.model_fields:
            valid = ", ".join([*sorted(m.Params.model_fields), *(["weights"] if m.takes_weights else [])])
            raise ConfigError(
                f"--search-space: merge method '{m.name}' has no parameter '{key}'; choose from [{valid}]"
            )
    if "weights" in space:
        if not m.takes_weights:
            raise ConfigError(f"--search-space: merge method '{m.name}' takes no per-model weights")
        for w in space["weights"]:
            if not isinstance(w, list) or len(w) != n_runs:
                raise ConfigError(
                    f"--search-space: weights {w!r} must be a list of {n_runs} numbers (one per run)"
                )
    for point in grid(space):  # every point must be valid before anything slow runs
        m.params({**params, **_split_point(point)[0]})


def search_merge(
    request: MergeRequest,
    output: Path,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grid-search ``request.method``'s parameters on ``request.search.split``; write the best merge to
    ``output`` (with ``search.json`` and ``search.png``).

    Returns (merge record, search log)."""
    spec = request.search
    if spec is None:
        raise ConfigError("search_merge needs a request with a search (space, split)")
    m = request.merge_method()
    params = dict(request.params)
    weights, seed = request.weights, request.seed
    if spec.split not in SPLITS or spec.split == "train":
        raise ConfigError(f"--search-split: choose from [dev, train-holdout], got '{spec.split}'")
    if m.repeated_tasks:
        raise ConfigError(f"merge method '{m.name}' selects its ingredients on data itself; drop --search")
    rundir.check_output(output, "merge", overwrite)  # before anything slow
    _check_space(m, spec.space, params, len(request.runs))
    points = grid(spec.space, spec.trials, seed)
    plan = plan_merge(request.runs, m, request.base)
    check_distances(plan, distances_to_base(plan), request.max_distance)
    head_from = {t: i for i, inp in enumerate(plan.inputs) for t in inp.tasks}
    scorer = Scorer(plan.inputs, head_from, spec.split)

    cache: dict[str, Stats] = {}

    def stats_for(p: Any, w: list[float] | None) -> Stats | None:
        if not m.needs_stats:
            return None
        key = json.dumps({k: getattr(p, k) for k in m.stats_params}, sort_keys=True, default=str)
        if key not in cache:
            cache[key] = get_stats(plan, m, p, w, seed, log)
        return cache[key]

    entries: list[dict[str, Any]] = []
    try:
        for j, point in enumerate(points):
            t0 = time.perf_counter()
            pp, pw = _split_point(point)
            p = m.params({**params, **pp})
            w = pw if "weights" in point else weights
            merged = merge_state(plan, m, p, w, seed, stats_for(p, w))
            res = scorer.score(merged)
            entries.append(
                {
                    "point": point,
                    "params": p.model_dump(mode="json"),
                    "weights": w,
                    "tasks": res["tasks"],
                    "average": res["average"],
                    "seconds": round(time.perf_counter() - t0, 3),
                }
            )
            shown = " ".join(f"{k}={v}" for k, v in point.items())
            log(f"search {j + 1}/{len(points)}: {shown} -> {res['average']:.2f}")
        best_i = max(range(len(entries)), key=lambda i: (entries[i]["average"], -i))
        best = entries[best_i]
        search_log = {
            "method": m.name,
            "strategy": "grid"
            if len(points) == len(grid(spec.space))
            else f"random {len(points)} of the grid",
            "split": spec.split,
            "space": spec.space,
            "fixed_params": params,
            "seed": seed,
            "selection": "highest average over tasks (mtfuse.metrics.aggregate); ties: first in grid order",
            "note": OPTIMISTIC.format(n=len(points))
            if spec.split == "dev"
            else "selected on train rows the runs did not train on (train-holdout); dev scores are unbiased",
            "points": entries,
            "best": {"index": best_i, **best},
        }
        summary = {
            "search": {
                "split": spec.split,
                "points": len(points),
                "best_point": best["point"],
                "best_average": best["average"],
                "log": rundir.SEARCH,
                "note": search_log["note"],
            },
            "request": request.record(plan.base_name),  # the search itself, not only its winner
        }
        winner = request.model_copy(
            update={"params": best["params"], "weights": best["weights"], "search": None}
        )

        def also(tmp: Path) -> None:
            rundir.write_json(tmp / rundir.SEARCH, search_log)
            plot_search(search_log, tmp / "search.png")

        record = merge_runs(
            winner,
            output,
            overwrite,
            stats=stats_for(m.params(best["params"]), best["weights"]),
            extra=summary,
            also=also,
            log=log,
        )
    finally:
        for st in cache.values():
            st.close()
    return record, search_log


def plot_search(search_log: dict[str, Any], path: Path) -> None:
    """Average score against lambda (``scale``) or the first numeric parameter; one line per other setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = search_log["points"]
    keys = list(search_log["space"])
    numeric = [
        k for k in keys if k != "weights" and all(isinstance(v, (int, float)) for v in search_log["space"][k])
    ]
    x_key = "scale" if "scale" in numeric else (numeric[0] if numeric else None)
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list[tuple[float, float]]] = {}
    for i, e in enumerate(points):
        rest = {k: v for k, v in e["point"].items() if k != x_key}
        label = " ".join(f"{k}={v}" for k, v in rest.items()) or search_log["method"]
        x = float(e["point"][x_key]) if x_key else float(i)
        lines.setdefault(label, []).append((x, e["average"]))
    for label, xy in lines.items():
        xy.sort()
        ax.plot([a for a, _ in xy], [b for _, b in xy], marker="o", label=label)
    best = search_log["best"]
    bx = float(best["point"][x_key]) if x_key else float(best["index"])
    ax.plot(
        [bx], [best["average"]], marker="*", markersize=16, color="black", linestyle="none", label="selected"
    )
    ax.set_xlabel("lambda (scale)" if x_key == "scale" else (x_key or "grid point"))
    ax.set_ylabel(f"average score on {search_log['split']}")
    ax.set_title(f"{search_log['method']}: {search_log['strategy']} search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
