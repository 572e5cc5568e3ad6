"""Ensemble members: a run directory's (or an ensemble directory's) dev predictions for one task, as arrays.

Output-level fusion never loads a model to tune or score: it reads what ``mtfuse train`` already wrote.

* ``model/heads.json`` (a run) or ``ensemble.json`` (an ensemble / stack) names each task, its type and its
  label list;
* ``metrics.json`` (or ``metrics-dev.json`` from ``mtfuse evaluate``) names each task's metrics;
* ``predictions/<task>.jsonl`` (or ``predictions/dev/<task>.jsonl`` from ``mtfuse evaluate``) holds one
  record per dev example: ``index``, the probabilities (``probs``: a ``{label: p}`` dict; for token tasks a
  list of such dicts, one per word the model saw) or the regression ``score``, and ``gold``.

Several members are stacked into one :class:`TaskArrays` only when they agree on the task: same type, same
label set (columns are reordered to the first member's order when only the order differs) and the same dev
examples (same count, same ``index`` order, same gold labels). Anything else is a :class:`MtfuseError` that
names the run directory and the task.

Units: an example for sentence-level tasks; a word for token tasks, where only the words every member saw
(the shortest member's prefix of each sentence, after ``max_length`` truncation) are fused and scored, as
``mtfuse.evaluate.score`` scores only the words a model saw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtfuse import rundir
from mtfuse.errors import MtfuseError, where
from mtfuse.metrics import METRICS, aggregate, task_score
from mtfuse.tasks.types import TASK_TYPES, TaskType

HEADS = Path(rundir.MODEL) / rundir.HEADS_JSON
EVAL_METRICS = rundir.metrics_file("dev")  # `mtfuse evaluate RUN_DIR` (e.g. of a merged model)


@dataclass(frozen=True)
class TaskInfo:
    """What a member says about one of its tasks."""

    name: str
    type: TaskType  # decides how the task's outputs are read, aligned, fused, scored and written
    labels: list[str] | None  # None for regression
    metrics: list[str]


@dataclass(frozen=True)
class Member:
    """A run directory or an ensemble directory, read once: its tasks, kind and results record."""

    path: Path
    kind: str  # results.json "kind": single-task, multi-task, ensemble, stack, merged, ...
    tasks: dict[str, TaskInfo]
    results: dict[str, Any] | None  # results.json, when present

    def task(self, name: str) -> TaskInfo:
        if name not in self.tasks:
            raise MtfuseError(f"{self.path}: has no task '{name}'; it has [{', '.join(self.tasks)}]")
        return self.tasks[name]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MtfuseError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtfuseError(f"{path}: not valid JSON ({e})") from None


def is_ensemble_dir(path: str | Path) -> bool:
    return (Path(path) / rundir.ENSEMBLE).is_file()


def _get(obj: Any, key: str, kinds: tuple[type, ...], source: str, optional: bool = False) -> Any:
    """``obj[key]`` checked: present (unless ``optional``) and of one of ``kinds``; errors name the field."""
    if not isinstance(obj, dict):
        raise MtfuseError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj or (optional and obj[key] is None):
        if optional:
            return None
        raise MtfuseError(f"{where(source, field=key)}: missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise MtfuseError(f"{where(source, field=key)}: expected {kinds[0].__name__}, got {value!r}")
    return value


def _task_info(name: Any, ttype: str, labels: Any, metrics: list[str] | None, source: str) -> TaskInfo:
    """One task of a member, checked: a safe name (it becomes a file name), a registered type, labels."""
    name = rundir.check_name(name, source)
    try:
        tt = TASK_TYPES.get(ttype)
    except MtfuseError as e:  # the registry's "unknown 'x'; choose from [...]"
        raise MtfuseError(f"{where(source, field='task_type')}: task '{name}': {e}") from None
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise MtfuseError(f"{where(source, field='labels')}: expected a list of label names or null")
    if tt.has_vocab and not labels:
        raise MtfuseError(f"{where(source, field='labels')}: missing (a {tt.name} task needs its label list)")
    return TaskInfo(name, tt, labels, list(metrics) if metrics else list(tt.default_metrics))


def load_member(path: str | Path) -> Member:
    """Read a member's task list (types, labels, metrics) and results record; no predictions yet.

    Every missing or malformed field is one :class:`MtfuseError` naming the file and the field; task names
    must be safe file names (``rundir.check_name``), since they name the prediction files."""
    path = Path(path)
    if not path.is_dir():
        raise MtfuseError(f"{path}: run directory not found")
    results = read_json(path / rundir.RESULTS) if (path / rundir.RESULTS).is_file() else None
    results = results if isinstance(results, dict) else None
    mfile = next((path / f for f in (rundir.METRICS, EVAL_METRICS) if (path / f).is_file()), None)
    metrics = read_json(mfile) if mfile is not None else None
    scored = (metrics or {}).get("tasks", {}) if isinstance(metrics, dict) else {}
    scored = scored if isinstance(scored, dict) else {}
    tasks: dict[str, TaskInfo] = {}
    if (path / rundir.ENSEMBLE).is_file():
        file = path / rundir.ENSEMBLE
        spec = read_json(file)
        kind = str(_get(spec, "kind", (str,), str(file), optional=True) or "ensemble")
        for name, t in _get(spec, "tasks", (dict,), str(file)).items():
            source = f"{file} tasks[{name!r}]"
            ms = _get(t, "metrics", (list,), source)
            info = _task_info(name, _get(t, "type", (str,), source), t.get("labels"), ms, source)
            tasks[info.name] = info
    elif (path / HEADS).is_file():
        file = path / HEADS
        heads = read_json(file)
        kind = str((results or {}).get("kind", "run"))
        for i, h in enumerate(_get(heads, "heads", (list,), str(file))):
            source = f"{file} heads[{i}]"
            name = _get(h, "task", (str,), source)
            ttype = _get(h, "task_type", (str,), source)
            ms = scored.get(name)
            info = _task_info(
                name, ttype, h.get("labels"), list(ms) if isinstance(ms, dict) else None, source
            )
            if info.name in tasks:
                raise MtfuseError(f"{source}: task '{name}' appears twice")
            tasks[info.name] = info
    else:
        raise MtfuseError(f"{path}: not a run directory (no {HEADS} or {rundir.ENSEMBLE})")
    if not tasks:
        raise MtfuseError(f"{path}: declares no task")
    return Member(path, kind, tasks, results)


# ------------------------------------------------------------------------------------------ one member


@dataclass
class MemberTask:
    """One member's dev predictions for one task, in example order.

    ``outputs``: one ``[units, C]`` array per example (``TaskType.outputs``: one row for sentence-level tasks,
    one per word the model saw for token tasks). ``gold``: as written (label strings, lists of labels, floats
    or tag lists)."""

    member: Member
    info: TaskInfo
    outputs: list[np.ndarray]
    gold: list[Any]
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)  # as read (texts: generation)


def load_task(member: Member, task: str) -> MemberTask:
    """Read ``predictions/<task>.jsonl`` of a member into arrays (label columns in the member's order)."""
    info = member.task(task)
    name = rundir.check_name(task, str(member.path))
    pred = rundir.PREDICTIONS
    path = rundir.inside(member.path, pred, f"{name}.jsonl")
    dev = rundir.inside(member.path, pred, "dev", f"{name}.jsonl")  # written by `mtfuse evaluate`
    if not path.is_file() and dev.is_file():
        path = dev
    if not path.is_file():
        raise MtfuseError(
            f"{member.path}: no dev predictions for task '{task}' ({pred}/{task}.jsonl is missing; "
            f"train writes it when it finishes, `mtfuse evaluate` writes {pred}/dev/{task}.jsonl)"
        )
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise MtfuseError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    if not rows:
        raise MtfuseError(f"{path}: holds no predictions")
    outputs: list[np.ndarray] = []
    gold: list[Any] = []
    for i, r in enumerate(rows):
        where = f"{path}:{i + 1}"
        if r.get("index", i) != i:
            raise MtfuseError(
                f"{where}: record has index {r.get('index')}, expected {i} (records out of order)"
            )
        if "gold" not in r:
            raise MtfuseError(f"{where}: no 'gold' label; fusion needs the dev split's gold labels")
        gold.append(r["gold"])
        outputs.append(info.type.outputs(r, info.labels, where))
    return MemberTask(member, info, outputs, gold, rows)


# ------------------------------------------------------------------------------------------ many members


@dataclass
class TaskArrays:
    """Aligned dev predictions of M members on one task: what every fusion method works on.

    ``P``: ``[M, N, C]`` member outputs per unit (probabilities; regression values with ``C = 1``).
    ``y``: gold per unit, as the task type's ``targets`` give it: class index ``[N]`` (classification, token),
    0/1 ``[N, C]`` (multilabel) or float ``[N]`` (regression).
    ``example``: the dev example of each unit ``[N]``, non-decreasing (a token task's words, in order).
    ``gold``: each example's gold as written in the predictions file (kept for the output records)."""

    task: str
    type: TaskType
    labels: list[str] | None
    metrics: list[str]
    members: list[Path]
    P: np.ndarray
    y: np.ndarray
    example: np.ndarray
    n_examples: int
    gold: list[Any] = field(repr=False)
    #: the first member's records, from which a type completes fused records (a span's answer text)
    member_records: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def n_members(self) -> int:
        return int(self.P.shape[0])

    def examples(self) -> np.ndarray:
        """The dev example ids present (all of them, or a fold's)."""
        return np.unique(self.example)

    def subset(self, examples: np.ndarray) -> TaskArrays:
        """The units of the given examples (order kept): a fold's view."""
        mask = np.isin(self.example, examples)
        keep = np.unique(self.example[mask])
        return replace(
            self, P=self.P[:, mask], y=self.y[mask], example=self.example[mask], n_examples=len(keep)
        )

    def units_of(self, examples: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(self.example, examples))

    # -- decisions and scores ---------------------------------------------------------------------
    def decide(self, out: np.ndarray) -> np.ndarray:
        return self.type.decide_examples(out, self.example)

    def score(self, out: np.ndarray) -> dict[str, float]:
        """The task's metrics (0-100) of fused outputs on these units, as ``mtfuse.evaluate.score`` does."""
        preds, gold = self.type.metric_inputs(self.decide(out), self.y, self.example, self.labels)
        return {m: METRICS.get(m)(preds, gold) for m in self.metrics}

    def task_score(self, out: np.ndarray) -> float:
        return task_score(self.score(out))

    def member_scores(self) -> list[dict[str, float]]:
        return [self.score(self.P[m]) for m in range(self.n_members)]

    # -- output records -------------------------------------------------------------------------
    def records(self, out: np.ndarray) -> list[dict[str, Any]]:
        """Prediction records in the run directory's format (``mtfuse.evaluate.records``), one per example."""
        return make_records(
            self.type, self.labels, out, self.example, self.n_examples, self.gold, self.member_records
        )


def make_records(
    task_type: TaskType,
    labels: list[str] | None,
    out: np.ndarray,
    example: np.ndarray,
    n_examples: int,
    gold: list[Any] | None = None,
    member_records: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Records like ``mtfuse.evaluate.records`` from fused unit outputs (``example``: each unit's example,
    ``0..n_examples-1`` in order): the task type's ``record`` of each example's units, completed from
    ``member_records`` (a member's records of the same examples, ``TaskType.complete_record``) when given."""
    d = task_type.decide_examples(out, example)
    bounds = np.searchsorted(example, np.arange(n_examples + 1))
    recs: list[dict[str, Any]] = []
    for i in range(n_examples):
        a, b = bounds[i], bounds[i + 1]
        rec: dict[str, Any] = {"index": i, **task_type.example_record(d[a:b], out[a:b], labels)}
        if member_records is not None:
            rec = task_type.complete_record(rec, member_records[i])
        if gold is not None:
            rec["gold"] = gold[i]
        recs.append(rec)
    return recs


def stack_outputs(
    task_type: TaskType, outputs: list[list[np.ndarray]], columns: list[list[int] | None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Members' per-example outputs (``outputs[m][i]``: ``[units, C]``) as ``P`` ``[M, U, C]`` over the units
    every member has (``TaskType.aligned_units``), and the example of each unit ``[U]``."""
    n = len(outputs[0])
    counts = np.array([[len(x) for x in per] for per in outputs], dtype=np.int64).reshape(len(outputs), n)
    aligned = task_type.aligned_units(counts)
    blocks = []
    for m, per in enumerate(outputs):
        width = per[0].shape[1] if per else 0
        parts = [np.asarray(x)[: aligned[i]] for i, x in enumerate(per)]
        flat = np.concatenate(parts, axis=0) if parts else np.zeros((0, width))
        cols = columns[m] if columns is not None else None
        blocks.append(flat[:, cols] if cols is not None else flat)
    return np.stack(blocks).astype(np.float64), np.repeat(np.arange(n), aligned)


def common_tasks(members: list[Member]) -> list[str]:
    """The tasks every member has, in the first member's order."""
    first = members[0]
    return [t for t in first.tasks if all(t in m.tasks for m in members[1:])]


def align(members: list[Member], task: str) -> TaskArrays:
    """Stack the members' dev predictions for ``task`` into one :class:`TaskArrays`, checking they agree."""
    if not members:
        raise MtfuseError("no ensemble members given")
    loaded = [load_task(m, task) for m in members]
    ref = loaded[0]
    info = ref.info
    tt = info.type
    for lt in loaded[1:]:
        other = lt.info
        if not tt.fuses_with(other.type):
            raise MtfuseError(
                f"task '{task}': {lt.member.path} has a {other.type.name} task but {ref.member.path} has a "
                f"{tt.name} one"
            )
        if (other.labels is None) != (info.labels is None) or (
            other.labels is not None and set(other.labels) != set(info.labels or [])
        ):
            raise MtfuseError(
                f"task '{task}': members were trained on different label sets: {ref.member.path} has "
                f"{info.labels}, {lt.member.path} has {other.labels}"
            )
        if len(lt.gold) != len(ref.gold):
            raise MtfuseError(
                f"task '{task}': {lt.member.path} has {len(lt.gold)} dev predictions but {ref.member.path} "
                f"has {len(ref.gold)}; members must be evaluated on the same dev examples (same data and "
                "subset.eval)"
            )
        for i, (g1, g2) in enumerate(zip(ref.gold, lt.gold, strict=True)):
            if not tt.same_gold(g1, g2):
                raise MtfuseError(
                    f"task '{task}': dev example {i} has gold {g2!r} in {lt.member.path} but {g1!r} in "
                    f"{ref.member.path}; members must be evaluated on the same dev examples (same data and "
                    "subset.eval)"
                )
    labels = info.labels
    n = len(ref.gold)

    def columns(lt: MemberTask) -> list[int] | None:
        if labels is None or lt.info.labels == labels:
            return None
        assert lt.info.labels is not None
        return [lt.info.labels.index(lab) for lab in labels]

    P, example = stack_outputs(tt, [lt.outputs for lt in loaded], [columns(lt) for lt in loaded])
    units = np.bincount(example, minlength=n)
    where = f"{ref.member.path}: task '{task}'"
    y = np.concatenate([tt.targets(g, labels, int(units[i]), where) for i, g in enumerate(ref.gold)])
    return TaskArrays(
        task=task,
        type=tt,
        labels=list(labels) if labels is not None else None,
        metrics=list(info.metrics),
        members=[m.path for m in members],
        P=P,
        y=y,
        example=example,
        n_examples=n,
        gold=list(ref.gold),
        member_records=ref.records or None,
    )


def load_all(
    paths: list[str | Path], tasks: list[str] | None = None
) -> tuple[list[Member], dict[str, TaskArrays]]:
    """Read every member, pick the tasks (default: those all members share) and align each task."""
    if not paths:
        raise MtfuseError("no ensemble members given")
    members = [load_member(p) for p in paths]
    seen: dict[Path, Path] = {}
    for m in members:
        key = m.path.resolve()
        if key in seen:
            raise MtfuseError(f"{m.path}: given twice as a member (also as {seen[key]})")
        seen[key] = m.path
    if tasks:
        for t in tasks:
            rundir.check_name(t, "--tasks")
            for m in members:
                m.task(t)  # a clear error naming the member that lacks it
        names = list(dict.fromkeys(tasks))
        unfused = [t for t in names if not members[0].task(t).type.fusable]
        if unfused:
            raise MtfuseError(_not_fused(members[0], unfused))
    else:
        shared = common_tasks(members)
        if not shared:
            raise MtfuseError(
                "the members share no task: "
                + "; ".join(f"{m.path} has [{', '.join(m.tasks)}]" for m in members)
            )
        names = [t for t in shared if members[0].task(t).type.fusable]  # masked LM: left out
        if not names:
            raise MtfuseError(_not_fused(members[0], shared))
    from mtfuse.fusion.ensemble.texts import align_texts  # text outputs (generation): selected, not averaged

    return members, {
        t: (align_texts if members[0].task(t).type.fused_as_text else align)(members, t) for t in names
    }


def _not_fused(member: Member, tasks: list[str]) -> str:
    """Why the tasks cannot be fused (their type's ``fusable`` is False), naming each task and its type."""
    named = ", ".join(f"'{t}' (type {member.task(t).type.name})" for t in tasks)
    return (
        f"task {named} cannot be ensembled or stacked: its outputs are not fused (a masked_lm task's fill "
        "masked tokens, they predict no labels); leave it out (--tasks), or merge the runs instead (mtfuse "
        "merge keeps every head)"
    )


def metrics_record(per_task: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``metrics.json`` content, the same shape ``mtfuse train`` writes."""
    return {"split": "dev", "tasks": per_task, "average": aggregate(per_task)}


def split_names(values: Sequence[str] | None) -> list[str] | None:
    """``--tasks a,b --tasks c`` -> ``[a, b, c]``; nothing -> None."""
    if not values:
        return None
    out = [v.strip() for s in values for v in str(s).split(",") if v.strip()]
    return out or None
