"""`mtfuse compare`: single-task runs, multi-task runs, ensembles, stacks (and merged models) side by side.

It reads run directories, ensemble directories and results JSON files; it never trains anything. Per task
and on average it puts together:

* the benchmark's own metrics (``metrics.json`` of each run; out-of-fold dev metrics for ensembles and
  stacks, see their ``ensemble.json`` protocol) and the task score (the mean of its metrics, GLUE-style);
  the average over the tasks every entry has (the only average compared across entries), and apart from it,
  labelled with its tasks, each entry's average over its own tasks;
* the score normalised to the single-task runs: ``100 * score / reference``, where the reference of a task is
  the mean (``reference="mean"``) or the best (``"best"``) task score of the compared single-task runs of that
  task, named in the tables (none, or a reference <= 0: no ratio), and the difference ``score - reference``;
* the cost: parameters, training time and peak training memory (``results.json``; an ensemble's are the sums
  of its members'), and, only when asked (``latency > 0``: it loads every model), the inference latency per
  example, measured here with ``mtfuse.predict.Predictor`` on the first ``latency`` dev inputs of each task
  at batch size 1 and 32 (model loading and a warm-up call are not timed; the best of 3 timings; an
  ensemble's latency is the sum of its members'). Latency depends on the machine and its load, and on
  torch's thread settings (``torch.set_num_threads``): compare systems measured in the same session.

Writes ``compare.json``, ``compare.md`` and ``plots/scores.png`` (per-task bars) and
``plots/score_vs_cost.png`` into a new directory, atomically, and prints the tables at the console's width.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtfuse.errors import MtfuseError
from mtfuse.metrics import task_score

BATCH_SIZES = (1, 32)
KIND_ORDER = ("single-task", "multi-task", "fine-tuned", "merged", "ensemble", "stack")


@dataclass
class Entry:
    """One compared system: a run, an ensemble / stack, or a results file."""

    name: str
    path: Path
    kind: str
    metrics: dict[str, dict[str, float]]  # task -> metric -> value
    cost: dict[str, Any]
    members: list[Path] = field(default_factory=list)
    measurable: bool = False  # a run directory with a model: latency can be measured
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> "b1"/"b32" -> ms per example
    notes: list[str] = field(default_factory=list)

    def scores(self) -> dict[str, float]:
        return {t: task_score(m) for t, m in self.metrics.items()}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtfuseError(f"{path}: not valid JSON ({e})") from None


def looks_like_entry(path: Path) -> bool:
    """A run, merge, ensemble or stack directory: something with metrics to compare."""
    names = ("results.json", "metrics.json", "metrics-dev.json", "ensemble.json")
    return path.is_dir() and any((path / n).is_file() for n in names)


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """Run / ensemble directories and results files as given; a plain folder stands for the entries in it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif looks_like_entry(p):
            out.append(p)
        elif p.is_dir():
            found = sorted(c for c in p.iterdir() if looks_like_entry(c))
            if not found:
                raise MtfuseError(
                    f"{p}: neither a run directory nor a folder of runs (nothing to compare in it)"
                )
            out.extend(found)
        else:
            raise MtfuseError(f"{p}: not found")
    if not out:
        raise MtfuseError("nothing to compare: give run directories, ensemble directories or results files")
    return out


def load_entry(path: Path) -> Entry:
    """Read one run / ensemble directory or results file (metrics and cost only)."""
    if path.is_file():
        res = _read_json(path)
        if (
            not isinstance(res, dict)
            or not isinstance(res.get("metrics"), dict)
            or "tasks" not in res["metrics"]
        ):
            raise MtfuseError(f"{path}: not a results file (no 'metrics' with per-task 'tasks')")
        name = path.parent.name if path.name == "results.json" and path.parent.name else path.stem
        return Entry(
            name, path, str(res.get("kind", "results")), res["metrics"]["tasks"], res.get("cost") or {}
        )
    results = _read_json(path / "results.json") if (path / "results.json").is_file() else {}
    mfile = next((path / f for f in ("metrics.json", "metrics-dev.json") if (path / f).is_file()), None)
    if mfile is not None:  # metrics-dev.json: `mtfuse evaluate RUN_DIR` (a merged model, say)
        metrics = _read_json(mfile).get("tasks")
    else:
        metrics = (results.get("metrics") or {}).get("tasks")
    if not metrics:
        raise MtfuseError(
            f"{path}: no dev metrics (metrics.json, metrics-dev.json or results.json); is training finished, "
            "or does the model need `mtfuse evaluate`?"
        )
    kind = str(results.get("kind", "run"))
    members: list[Path] = []
    if (path / "ensemble.json").is_file():
        spec = _read_json(path / "ensemble.json")
        kind = str(results.get("kind", spec.get("kind", "ensemble")))
        members = [Path(m["path"]) for m in spec.get("members", [])]
    entry = Entry(path.name, path, kind, metrics, dict(results.get("cost") or {}), members)
    entry.measurable = (path / "config.yaml").is_file() and (path / "model").is_dir()
    return entry


def unique_names(entries: list[Entry]) -> None:
    """Make the entries' names unique: ``parent/name`` for names given twice, then ``#2``, ``#3``..."""
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.name] = seen.get(e.name, 0) + 1
    for e in entries:
        if seen[e.name] > 1:
            e.name = f"{e.path.parent.name}/{e.name}"
    taken: set[str] = set()
    for e in entries:
        base, i = e.name, 2
        while e.name in taken:
            e.name, i = f"{base}#{i}", i + 1
        taken.add(e.name)


# ------------------------------------------------------------------------------------------ latency


def dev_rows(run_dir: Path, task: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` dev inputs of a run's task, read with the run's own data config."""
    from mtfuse import rundir
    from mtfuse.tasks.readers import READERS

    cfg = rundir.load_run_config(run_dir)
    tc = next((t for t in cfg.tasks if t.name == task), None)
    if tc is None:
        raise MtfuseError(f"{run_dir}: config has no task '{task}'")
    return READERS.get(tc.data.format).read(tc.data, "dev")[:n]


def measure_latency(
    run_dir: Path, n: int, device: str | None = None, repeats: int = 3
) -> dict[str, dict[str, float]]:
    """Milliseconds per example of ``Predictor.predict_rows`` on ``n`` dev inputs, per task and batch size:
    the best of ``repeats`` timings after a warm-up call (the least disturbed by other processes, as
    ``timeit`` does)."""
    from mtfuse.predict import Predictor

    pred = Predictor(run_dir, device=device)
    out: dict[str, dict[str, float]] = {}
    for task in pred.tasks:
        rows = dev_rows(run_dir, task, n)
        if not rows:
            continue
        times = {}
        for bs in BATCH_SIZES:
            pred.batch_size = bs
            pred.predict_rows(task, rows[: min(2, len(rows))])  # warm-up
            best = float("inf")
            for _ in range(max(repeats, 1)):
                t0 = time.perf_counter()
                pred.predict_rows(task, rows)
                best = min(best, time.perf_counter() - t0)
            times[f"b{bs}"] = round(1000.0 * best / len(rows), 3)
        out[task] = times
    return out


class LatencyCache:
    """Measures each run directory once (ensembles sum their members', recursively)."""

    def __init__(self, n: int, device: str | None = None, repeats: int = 3) -> None:
        self.n, self.device, self.repeats = n, device, repeats
        self.done: dict[Path, dict[str, dict[str, float]]] = {}
        self.errors: dict[Path, str] = {}

    def run(self, path: Path) -> dict[str, dict[str, float]] | None:
        key = path.resolve()
        if key not in self.done and key not in self.errors:
            try:
                self.done[key] = measure_latency(path, self.n, self.device, self.repeats)
            except MtfuseError as e:
                self.errors[key] = str(e)
            except OSError as e:
                self.errors[key] = f"{path}: {e}"
        return self.done.get(key)

    def entry(self, e: Entry) -> dict[str, dict[str, float]] | None:
        if e.measurable:
            return self.run(e.path)
        if not e.members:
            return None
        per_member = []
        for m in e.members:
            if (m / "ensemble.json").is_file():
                lat = self.entry(load_entry(m))
            else:
                lat = self.run(m)
            if lat is None:
                return None
            per_member.append(lat)
        out: dict[str, dict[str, float]] = {}
        for task in e.metrics:
            if all(task in lat for lat in per_member):
                out[task] = {
                    f"b{bs}": round(sum(lat[task][f"b{bs}"] for lat in per_member), 3) for bs in BATCH_SIZES
                }
        return out


# ------------------------------------------------------------------------------------------ table


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


REFERENCES = ("mean", "best")


def _references(entries: list[Entry], tasks: list[str], how: str) -> dict[str, Any]:
    """Per task, the single-task score that normalises it: the mean of the single-task runs of that task, or
    the best of them; with the runs it comes from."""
    out: dict[str, Any] = {}
    for t in tasks:
        singles = [(e.name, e.scores()[t]) for e in entries if e.kind == "single-task" and t in e.metrics]
        if not singles:
            continue
        if how == "best":
            name, score = max(singles, key=lambda x: x[1])
            out[t] = {"score": float(score), "runs": [name], "how": "best"}
        else:
            out[t] = {
                "score": float(np.mean([s for _, s in singles])),
                "runs": [n for n, _ in singles],
                "how": "mean",
            }
    return out


def build_comparison(entries: list[Entry], reference: str = "mean") -> dict[str, Any]:
    """The comparison as JSON-ready data: tasks, references, and per entry scores, normalised scores, cost.

    ``reference``: ``"mean"`` (default) or ``"best"``: each task is normalised to the mean, or the best, task
    score of the compared single-task runs of that task. Averages that are compared across entries are over
    the tasks every entry has (``common_tasks``); an entry's average over its own tasks is kept apart
    (``average``, with ``tasks``) and is only comparable between entries with the same tasks.
    """
    if reference not in REFERENCES:
        raise MtfuseError(f"unknown reference '{reference}'; choose from [{', '.join(REFERENCES)}]")
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    entries = sorted(entries, key=lambda e: order.get(e.kind, len(order)))
    tasks: list[str] = []
    metric_names: dict[str, list[str]] = {}
    for e in entries:
        for t, ms in e.metrics.items():
            if t not in tasks:
                tasks.append(t)
            for m in ms:
                if m not in metric_names.setdefault(t, []):
                    metric_names[t].append(m)
    refs = _references(entries, tasks, reference)
    common = [t for t in tasks if all(t in e.metrics for e in entries)]
    rows = []
    for e in entries:
        scores = e.scores()
        normalised: dict[str, float | None] = {}
        delta: dict[str, float | None] = {}
        for t, s in scores.items():
            ref = refs.get(t, {}).get("score")
            delta[t] = None if ref is None else s - ref
            normalised[t] = None if ref is None or ref <= 0 else 100.0 * s / ref
        common_normalised = [normalised[t] for t in common]
        lat = e.latency
        cost = {
            "parameters": e.cost.get("parameters"),
            "train_seconds": e.cost.get("train_seconds"),
            "peak_memory_mb": e.cost.get("peak_memory_mb"),
            "latency_ms_per_example": {
                f"b{bs}": _mean([v[f"b{bs}"] for v in lat.values()])
                if lat
                else e.cost.get(f"latency_ms_b{bs}")
                for bs in BATCH_SIZES
            },
            "latency_per_task": lat or None,
        }
        if e.members:
            cost["members"] = len(e.members)
        rows.append(
            {
                "name": e.name,
                "kind": e.kind,
                "path": str(e.path),
                "members": [str(m) for m in e.members],
                "tasks": [t for t in tasks if t in scores],
                "metrics": e.metrics,
                "task_scores": scores,
                "average": _mean(list(scores.values())),
                "common_average": _mean([scores[t] for t in common]),
                "normalised": normalised,
                "normalised_average": None
                if not common or any(v is None for v in common_normalised)
                else _mean([v for v in common_normalised if v is not None]),
                "normalised_own_average": _mean([v for v in normalised.values() if v is not None]),
                "delta": delta,
                "cost": cost,
                "notes": e.notes,
            }
        )
    how = "the best" if reference == "best" else "the mean"
    return {
        "format_version": 2,
        "split": "dev",
        "tasks": tasks,
        "metrics": metric_names,
        "common_tasks": common,
        "same_tasks": all(r["tasks"] == tasks for r in rows),
        "reference_method": reference,
        "reference": refs,
        "definitions": {
            "task_score": "mean of the task's metrics (0-100, higher is better; a lower-is-better metric, "
            "perplexity or mlm_loss, counts as 100 / perplexity)",
            "common_average": "mean task score over the tasks every entry has (comparable across entries)",
            "average": "mean task score over the entry's own tasks ('tasks'): comparable only between entries "
            "with the same tasks",
            "normalised": f"100 * task score / reference; reference = {how} task score of the single-task runs "
            "of that task (none, or a reference <= 0: null)",
            "normalised_average": "mean normalised score over the common tasks (null unless every common task "
            "has a reference)",
            "normalised_own_average": "mean normalised score over the entry's own tasks that have a reference",
            "delta": "task score - reference",
            "latency": "ms per example of Predictor.predict_rows on the first dev inputs, batch 1 and 32; "
            "ensembles: the sum of their members'; measured only with --latency N",
            "cost": "parameters, train_seconds and peak_memory_mb (training) from results.json; ensembles: "
            "the sum of their members'",
            "ensembles": "ensemble and stack scores are out-of-fold on the dev split (see ensemble.json)",
        },
        "entries": rows,
    }


def join_systems(
    result: dict[str, Any], name_of: Callable[[dict[str, Any]], str]
) -> dict[str, dict[str, Any]]:
    """Join a comparison's entries into systems: entries ``name_of`` gives the same name (the single-task run
    of each task; per-task ensembles) become one row ``{kind, tasks: {task: score}, metrics: {task: {...}},
    parameters, train_seconds}``, in the entries' order. Cost: a system made of several runs costs the
    parameters and training time of each distinct run once (ensembles whose members overlap across tasks
    share them)."""
    cost_of = {str(Path(e["path"]).resolve()): e.get("cost") or {} for e in result["entries"]}
    out: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for e in result["entries"]:
        name = name_of(e)
        s = out.setdefault(name, {"kind": e["kind"], "tasks": {}, "metrics": {}})
        for t, v in e["task_scores"].items():
            s["tasks"][t] = v
            s["metrics"][t] = e["metrics"][t]
        members = [str(Path(m).resolve()) for m in e.get("members") or []]
        for m in members or [str(Path(e["path"]).resolve())]:
            runs.setdefault(name, {})[m] = cost_of.get(m) or (e.get("cost") or {})
    for name, s in out.items():
        s["parameters"] = sum(c.get("parameters") or 0 for c in runs[name].values())
        s["train_seconds"] = sum(c.get("train_seconds") or 0.0 for c in runs[name].values())
    return out


def compare_command(
    paths: Sequence[str | Path],
    output: str | Path,
    latency: int = 0,
    overwrite: bool = False,
    device: str | None = None,
    console: Any = None,
    repeats: int = 3,
    reference: str = "mean",
) -> dict[str, Any]:
    """``mtfuse compare PATH... --output DIR``: put runs, ensembles, stacks and merged models side by side.

    Args:
        paths: run directories, ensemble / stack directories, results JSON files, or folders holding them.
        output: the directory to write (refused if it exists, unless ``overwrite`` and it holds a comparison).
        latency: dev inputs per task to time inference on (batch 1 and 32); 0 (the default) skips the
            measurement, which loads every model: comparing is then a matter of reading JSON files.
        overwrite: replace an existing comparison directory.
        device: the device the latency is measured on (default: CUDA when available, else CPU).
        console: a ``rich`` console to print the tables on (None: print nothing).
        repeats: timings per task and batch size; the best one counts.
        reference: normalise each task to the ``"mean"`` or the ``"best"`` of its single-task runs.

    Returns the ``compare.json`` content. Writes ``compare.json``, ``compare.md`` and ``plots/*.png``."""
    from mtfuse import report, rundir
    from mtfuse.rundir import write_json

    output = Path(output)
    if latency < 0:
        raise MtfuseError(f"--latency must be >= 0 (got {latency})")
    if reference not in REFERENCES:
        raise MtfuseError(f"--reference must be one of {', '.join(REFERENCES)} (got {reference!r})")
    rundir.check_output(output, "compare", overwrite)
    entries = [load_entry(p) for p in expand(paths)]
    unique_names(entries)
    if latency > 0:
        cache = LatencyCache(latency, device, repeats)
        for e in entries:
            lat = cache.entry(e)
            if lat:
                e.latency = lat
            elif e.measurable or e.members:
                why = cache.errors.get(e.path.resolve()) or next(
                    (cache.errors[m.resolve()] for m in e.members if m.resolve() in cache.errors),
                    "no dev inputs",
                )
                e.notes.append(f"latency not measured: {why}")
    result = build_comparison(entries, reference)
    md = report.markdown(result)

    def fill(tmp: Path) -> None:
        write_json(tmp / rundir.COMPARE, result)
        (tmp / "compare.md").write_text(md, encoding="utf-8")
        report.plot_task_bars(result, tmp / "plots" / "scores.png")
        report.plot_score_vs_cost(result, tmp / "plots" / "score_vs_cost.png")

    rundir.write_dir_atomic(output, "compare", overwrite, fill)
    if console is not None:  # plain fixed-width tables, split to fit the terminal (80 columns and up)
        text = report.terminal(result, width=max(int(getattr(console, "width", 80) or 80), 40))
        console.print(text, markup=False, highlight=False)
        if latency == 0:
            console.print(
                "latency not measured (pass --latency N to time N dev inputs per task)", highlight=False
            )
        for row in result["entries"]:
            for note in row["notes"]:
                console.print(f"warning: {row['name']}: {note}", highlight=False)
        console.print(f"comparison written to {output}", highlight=False)
    return result
