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
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtfuse.errors import MtfuseError
from mtfuse.metrics import METRICS, aggregate, task_score
from mtfuse.tasks.types import TASK_TYPES

HEADS = Path("model") / "heads.json"
ENSEMBLE = "ensemble.json"
METRICS_FILE = "metrics.json"
EVAL_METRICS_FILE = "metrics-dev.json"  # `mtfuse evaluate RUN_DIR` (e.g. of a merged model)
RESULTS_FILE = "results.json"
PREDICTIONS = "predictions"

#: How the fusion code treats each task type: the kinds of output it averages.
KINDS = ("categorical", "multilabel", "regression", "token")


@dataclass(frozen=True)
class TaskInfo:
    """What a member says about one of its tasks."""

    name: str
    type: str  # the task type's registry name (classification, regression, token_classification, ...)
    kind: str  # one of KINDS
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


def kind_of(task_type: str) -> str:
    """The fusion kind of a task type (``categorical`` for every single-label classification type)."""
    tt = TASK_TYPES.get(task_type)
    if tt.token_level:
        return "token"
    if not tt.has_vocab:
        return "regression"
    if tt.name == "multilabel":
        return "multilabel"
    return "categorical"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MtfuseError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtfuseError(f"{path}: not valid JSON ({e})") from None


def is_ensemble_dir(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE).is_file()


def load_member(path: str | Path) -> Member:
    """Read a member's task list (types, labels, metrics) and results record; no predictions yet."""
    path = Path(path)
    if not path.is_dir():
        raise MtfuseError(f"{path}: run directory not found")
    results = _read_json(path / RESULTS_FILE) if (path / RESULTS_FILE).is_file() else None
    mfile = next((path / f for f in (METRICS_FILE, EVAL_METRICS_FILE) if (path / f).is_file()), None)
    metrics = _read_json(mfile) if mfile is not None else None
    scored = (metrics or {}).get("tasks", {}) if isinstance(metrics, dict) else {}
    tasks: dict[str, TaskInfo] = {}
    if (path / ENSEMBLE).is_file():
        spec = _read_json(path / ENSEMBLE)
        kind = str(spec.get("kind", "ensemble"))
        for name, t in spec.get("tasks", {}).items():
            try:
                tasks[name] = TaskInfo(
                    name, t["type"], kind_of(t["type"]), t.get("labels"), list(t["metrics"])
                )
            except (KeyError, TypeError) as e:
                raise MtfuseError(f"{path / ENSEMBLE}: task '{name}' lacks field {e}") from None
            except MtfuseError as e:
                raise MtfuseError(f"{path / ENSEMBLE}: task '{name}': {e}") from None
    elif (path / HEADS).is_file():
        heads = _read_json(path / HEADS)
        kind = str((results or {}).get("kind", "run"))
        for h in heads.get("heads", []):
            name, ttype = h["task"], h["task_type"]
            try:
                tt = TASK_TYPES.get(ttype)
                kind_ = kind_of(ttype)
            except MtfuseError as e:  # the registry's "unknown 'x'; choose from [...]"
                raise MtfuseError(f"{path / HEADS}: task '{name}': {e}") from None
            ms = list(scored.get(name, {})) or list(tt.default_metrics)
            tasks[name] = TaskInfo(name, ttype, kind_, h.get("labels"), ms)
    else:
        raise MtfuseError(f"{path}: not a run directory (no {HEADS} or {ENSEMBLE})")
    if not tasks:
        raise MtfuseError(f"{path}: declares no task")
    return Member(path, kind, tasks, results)


# ------------------------------------------------------------------------------------------ one member


@dataclass
class MemberTask:
    """One member's dev predictions for one task, in example order.

    ``probs``: ``[n, C]`` (categorical, multilabel), ``[n, 1]`` (regression) or a list of ``[words_i, C]``
    (token). ``gold``: as written (label strings, lists of labels, floats or tag lists)."""

    member: Member
    info: TaskInfo
    probs: np.ndarray | list[np.ndarray]
    gold: list[Any]


def _row_probs(d: Any, labels: list[str], where: str) -> np.ndarray:
    if not isinstance(d, dict):
        raise MtfuseError(f"{where}: 'probs' is not a {{label: probability}} dict")
    if set(d) != set(labels):
        raise MtfuseError(
            f"{where}: probabilities over labels {sorted(d)} but the task's labels are {labels}"
        )
    return np.array([float(d[lab]) for lab in labels], dtype=np.float64)


def load_task(member: Member, task: str) -> MemberTask:
    """Read ``predictions/<task>.jsonl`` of a member into arrays (label columns in the member's order)."""
    info = member.task(task)
    path = member.path / PREDICTIONS / f"{task}.jsonl"
    if not path.is_file() and (member.path / PREDICTIONS / "dev" / f"{task}.jsonl").is_file():
        path = member.path / PREDICTIONS / "dev" / f"{task}.jsonl"  # written by `mtfuse evaluate`
    if not path.is_file():
        raise MtfuseError(
            f"{member.path}: no dev predictions for task '{task}' ({PREDICTIONS}/{task}.jsonl is missing; "
            f"train writes it when it finishes, `mtfuse evaluate` writes {PREDICTIONS}/dev/{task}.jsonl)"
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
    labels = info.labels
    probs: list[Any] = []
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
        if info.kind == "regression":
            if "score" not in r:
                raise MtfuseError(f"{where}: no 'score' for regression task '{task}'")
            probs.append(float(r["score"]))
            continue
        assert labels is not None
        if info.kind == "token":
            words = r.get("probs")
            if not isinstance(words, list):
                raise MtfuseError(f"{where}: 'probs' is not a list of per-word distributions")
            if words and not isinstance(words[0], dict):
                raise MtfuseError(
                    f"{where}: 'probs' holds only each word's top probability (written by an older mtfuse); "
                    "token ensembles need the full distribution per word: evaluate or train the run again"
                )
            arr = np.array([_row_probs(w, labels, where) for w in words], dtype=np.float64)
            probs.append(arr.reshape(len(words), len(labels)))
        else:
            probs.append(_row_probs(r.get("probs"), labels, where))
    if info.kind == "token":
        return MemberTask(member, info, probs, gold)
    arr = np.asarray(probs, dtype=np.float64)
    return MemberTask(member, info, arr.reshape(len(rows), -1), gold)


# ------------------------------------------------------------------------------------------ many members


@dataclass
class TaskArrays:
    """Aligned dev predictions of M members on one task: what every fusion method works on.

    ``P``: ``[M, N, C]`` member outputs per unit (probabilities; regression values with ``C = 1``).
    ``y``: gold per unit: class index ``[N]`` (categorical, token), 0/1 ``[N, C]`` (multilabel) or float
    ``[N]`` (regression).
    ``example``: the dev example of each unit ``[N]``, non-decreasing (a token task's words, in order).
    ``gold``: each example's gold as written in the predictions file (kept for the output records)."""

    task: str
    type: str
    kind: str
    labels: list[str] | None
    metrics: list[str]
    members: list[Path]
    P: np.ndarray
    y: np.ndarray
    example: np.ndarray
    n_examples: int
    gold: list[Any] = field(repr=False)

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
        return decide(self.kind, out)

    def _sentences(self, values: np.ndarray) -> list[list[Any]]:
        """Split per-unit values into per-example lists (token tasks)."""
        if len(values) == 0:
            return []
        cuts = np.flatnonzero(np.diff(self.example)) + 1
        return [list(v) for v in np.split(values, cuts)]

    def score(self, out: np.ndarray) -> dict[str, float]:
        """The task's metrics (0-100) of fused outputs on these units, as ``mtfuse.evaluate.score`` does."""
        d = self.decide(out)
        if self.kind == "token":
            assert self.labels is not None
            lab = np.asarray(self.labels, dtype=object)
            p_tags = self._sentences(lab[d])
            g_tags = self._sentences(lab[self.y])
            return {m: METRICS.get(m)(p_tags, g_tags) for m in self.metrics}
        gold = self.y if self.kind != "multilabel" else self.y.astype(np.int64)
        return {m: METRICS.get(m)(d, gold) for m in self.metrics}

    def task_score(self, out: np.ndarray) -> float:
        return task_score(self.score(out))

    def member_scores(self) -> list[dict[str, float]]:
        return [self.score(self.P[m]) for m in range(self.n_members)]

    # -- output records -------------------------------------------------------------------------
    def records(self, out: np.ndarray) -> list[dict[str, Any]]:
        """Prediction records in the run directory's format (``mtfuse.evaluate.records``), one per example."""
        return make_records(self.kind, self.labels, out, self.example, self.n_examples, self.gold)


def decide(kind: str, out: np.ndarray) -> np.ndarray:
    """Decisions from fused outputs ``[N, C]``: class index, 0/1 matrix (threshold 0.5) or the value."""
    if kind == "regression":
        return out[:, 0]
    if kind == "multilabel":
        return (out >= 0.5).astype(np.int64)
    return out.argmax(axis=1)


def make_records(
    kind: str,
    labels: list[str] | None,
    out: np.ndarray,
    example: np.ndarray,
    n_examples: int,
    gold: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """Records like ``mtfuse.evaluate.records`` from fused unit outputs (``example``: each unit's example)."""
    d = decide(kind, out)
    recs: list[dict[str, Any]] = []
    if kind == "token":
        assert labels is not None
        bounds = np.searchsorted(example, np.arange(n_examples + 1))
        for i in range(n_examples):
            a, b = bounds[i], bounds[i + 1]
            rec: dict[str, Any] = {
                "index": i,
                "tags": [labels[j] for j in d[a:b]],
                "probs": [_prob_dict(labels, row) for row in out[a:b]],
            }
            if gold is not None:
                rec["gold"] = gold[i]
            recs.append(rec)
        return recs
    for i in range(len(d)):
        rec = {"index": int(example[i])}
        if kind == "regression":
            rec["score"] = float(d[i])
        elif kind == "multilabel":
            assert labels is not None
            rec["labels"] = [labels[j] for j in np.flatnonzero(d[i])]
            rec["probs"] = _prob_dict(labels, out[i])
        else:
            assert labels is not None
            rec["label"] = labels[int(d[i])]
            rec["probs"] = _prob_dict(labels, out[i])
        if gold is not None:
            rec["gold"] = gold[int(example[i])]
        recs.append(rec)
    return recs


def _prob_dict(labels: list[str], row: np.ndarray) -> dict[str, float]:
    return {lab: round(float(x), 6) for lab, x in zip(labels, row, strict=True)}


def _same_gold(kind: str, a: Any, b: Any) -> bool:
    if kind == "regression":
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    if kind == "multilabel":
        return sorted(a) == sorted(b)
    return bool(a == b)


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
    for lt in loaded[1:]:
        other = lt.info
        if other.kind != info.kind:
            raise MtfuseError(
                f"task '{task}': {lt.member.path} has a {other.type} task but {ref.member.path} has a "
                f"{info.type} one"
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
            if not _same_gold(info.kind, g1, g2):
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

    if info.kind == "token":
        assert labels is not None
        lengths = np.array([[len(p) for p in lt.probs] for lt in loaded])  # [M, n]
        aligned = lengths.min(axis=0)
        blocks = []
        for lt in loaded:
            cols = columns(lt)
            parts = [np.asarray(p)[: aligned[i]] for i, p in enumerate(lt.probs)]
            flat = np.concatenate(parts, axis=0) if parts else np.zeros((0, len(labels)))
            blocks.append(flat[:, cols] if cols is not None else flat)
        P = np.stack(blocks).reshape(len(loaded), -1, len(labels))
        example = np.repeat(np.arange(n), aligned)
        y = np.array(
            [
                _tag_index(labels, t, task, ref.member.path)
                for i, g in enumerate(ref.gold)
                for t in g[: aligned[i]]
            ],
            dtype=np.int64,
        )
    else:
        blocks = []
        for lt in loaded:
            arr = np.asarray(lt.probs)
            cols = columns(lt)
            blocks.append(arr[:, cols] if cols is not None else arr)
        P = np.stack(blocks)
        example = np.arange(n)
        if info.kind == "regression":
            y = np.array([float(g) for g in ref.gold], dtype=np.float64)
        elif info.kind == "multilabel":
            assert labels is not None
            y = np.zeros((n, len(labels)), dtype=np.float64)
            for i, g in enumerate(ref.gold):
                for lab in g:
                    y[i, _tag_index(labels, lab, task, ref.member.path)] = 1.0
        else:
            assert labels is not None
            y = np.array([_tag_index(labels, g, task, ref.member.path) for g in ref.gold], dtype=np.int64)
    return TaskArrays(
        task=task,
        type=info.type,
        kind=info.kind,
        labels=list(labels) if labels is not None else None,
        metrics=list(info.metrics),
        members=[m.path for m in members],
        P=P.astype(np.float64),
        y=y,
        example=example,
        n_examples=n,
        gold=list(ref.gold),
    )


def _tag_index(labels: list[str], lab: Any, task: str, path: Path) -> int:
    try:
        return labels.index(str(lab))
    except ValueError:
        raise MtfuseError(
            f"{path}: task '{task}': gold label '{lab}' is not among the task's labels {labels}"
        ) from None


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
            for m in members:
                m.task(t)  # a clear error naming the member that lacks it
        names = list(dict.fromkeys(tasks))
    else:
        names = common_tasks(members)
        if not names:
            raise MtfuseError(
                "the members share no task: "
                + "; ".join(f"{m.path} has [{', '.join(m.tasks)}]" for m in members)
            )
    return members, {t: align(members, t) for t in names}


def metrics_record(per_task: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``metrics.json`` content, the same shape ``mtfuse train`` writes."""
    return {"split": "dev", "tasks": per_task, "average": aggregate(per_task)}
