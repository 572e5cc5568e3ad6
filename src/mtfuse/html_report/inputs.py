"""What `mtfuse report` reads: the systems to compare (through ``mtfuse.compare``'s own collector), earlier
comparisons (``compare.json``) and affinity results (``affinity.json``).

A compare directory stands for the systems it compared, with what it measured (latency included); a system
given twice (directly and in a comparison) is shown once, with the measurement that has latency if one has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtfuse import rundir
from mtfuse.compare import REFERENCES, Entry, expand, load_entry, looks_like_entry, unique_names
from mtfuse.errors import MtfuseError


@dataclass
class Affinity:
    """An ``mtfuse affinity`` output directory and its ``affinity.json``."""

    path: Path
    result: dict[str, Any]


@dataclass
class Inputs:
    """Everything the report shows, read and checked; ``reference`` normalises the comparison."""

    paths: list[Path]
    entries: list[Entry] = field(default_factory=list)
    affinities: list[Affinity] = field(default_factory=list)
    comparisons: list[Path] = field(default_factory=list)
    reference: str = "mean"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MtfuseError(f"{path}: cannot be read as JSON ({e})") from None


def is_comparison(path: Path) -> bool:
    return path.is_dir() and (path / rundir.COMPARE).is_file()


def is_affinity(path: Path) -> bool:
    return path.is_dir() and (path / rundir.AFFINITY).is_file()


def read_affinity(path: Path) -> Affinity:
    """An affinity directory; its matrix must be square over its tasks."""
    file = path / rundir.AFFINITY
    res = _read_json(file)
    ok = (
        isinstance(res, dict) and isinstance(res.get("tasks"), list) and isinstance(res.get("affinity"), list)
    )
    n = len(res["tasks"]) if ok else 0
    if (
        not ok
        or len(res["affinity"]) != n
        or any(not isinstance(r, list) or len(r) != n for r in res["affinity"])
    ):
        raise MtfuseError(f"{file}: not an affinity result (needs 'tasks' and a square 'affinity' matrix)")
    return Affinity(path, res)


def entry_from_row(row: Any, where: str) -> Entry:
    """A system of a ``compare.json`` back as an :class:`Entry`, its measurements (latency) kept."""
    if not isinstance(row, dict) or not all(k in row for k in ("name", "path", "kind", "metrics")):
        raise MtfuseError(f"{where}: not a comparison entry (needs name, path, kind and metrics)")
    cost = row.get("cost") or {}
    per_example = cost.get("latency_ms_per_example") or {}
    kept = {k: cost.get(k) for k in ("parameters", "train_seconds", "peak_memory_mb")}
    kept.update({f"latency_ms_{b}": per_example.get(b) for b in ("b1", "b32")})
    return Entry(
        name=str(row["name"]),
        path=Path(row["path"]),
        kind=str(row["kind"]),
        metrics=row["metrics"],
        cost=kept,
        members=[Path(m) for m in row.get("members") or []],
        latency=cost.get("latency_per_task") or {},
        notes=list(row.get("notes") or []),
    )


def read_comparison(path: Path) -> tuple[list[Entry], str]:
    """The systems of a compare directory and the reference it normalised them to."""
    file = path / rundir.COMPARE
    cmp = _read_json(file)
    if not isinstance(cmp, dict) or not isinstance(cmp.get("entries"), list):
        raise MtfuseError(f"{file}: not a comparison (no 'entries' list)")
    entries = [entry_from_row(r, f"{file} (entry {i + 1})") for i, r in enumerate(cmp["entries"])]
    return entries, str(cmp.get("reference_method", "mean"))


def _dedupe(entries: list[Entry]) -> list[Entry]:
    """One entry per system (resolved path): the one with latency measured, else the first."""
    kept: dict[Path, Entry] = {}
    for e in entries:
        key = e.path.resolve()
        if key not in kept or (e.latency and not kept[key].latency):
            kept[key] = e
    return list(kept.values())


def collect(paths: Sequence[str | Path], reference: str | None = None) -> Inputs:
    """Read and check every input; a bad one is one ``MtfuseError`` naming its path."""
    if not paths:
        raise MtfuseError(
            "nothing to report: give run, ensemble, stack, merge, compare or affinity directories"
        )
    if reference is not None and reference not in REFERENCES:
        raise MtfuseError(f"--reference must be one of {', '.join(REFERENCES)} (got {reference!r})")
    inputs = Inputs([Path(p) for p in paths])
    systems: list[Path] = []
    entries: list[Entry] = []
    references: list[str] = []

    def special(p: Path) -> bool:
        if is_comparison(p):
            found, how = read_comparison(p)
            entries.extend(found)
            references.append(how)
            inputs.comparisons.append(p)
            return True
        if is_affinity(p):
            inputs.affinities.append(read_affinity(p))
            return True
        return False

    for p in inputs.paths:
        if not p.exists():
            raise MtfuseError(f"{p}: not found")
        if special(p):
            continue
        if p.is_file() or looks_like_entry(p):
            systems.append(p)
            continue
        # a folder: the runs, comparisons and affinity results in it
        children = sorted(c for c in p.iterdir() if c.is_dir()) if p.is_dir() else []
        found = [c for c in children if special(c)]
        if any(looks_like_entry(c) for c in children):
            systems.append(p)  # compare's own collector takes the runs of a folder
        elif not found:
            raise MtfuseError(
                f"{p}: not a run, ensemble, stack, merge, compare or affinity directory, nor a folder of them "
                "(nothing to report in it)"
            )
    if systems:
        entries.extend(load_entry(q) for q in expand(systems))
    inputs.entries = _dedupe(entries)
    unique_names(inputs.entries)
    inputs.reference = reference or (references[0] if references else "mean")
    return inputs
