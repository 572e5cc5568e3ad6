"""Read, check, subset and tokenise every task of a config: the one entry point from config to TaskData."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mtfuse.config import RunConfig, TaskConfig
from mtfuse.errors import ConfigError, DataError
from mtfuse.tasks.features import Encoded, TaskData, Tokenizing, check_fields, encode_rows, resolve_fields
from mtfuse.tasks.readers import READERS, carve_dev
from mtfuse.tasks.types import TASK_TYPES


def cache_dir(cfg: RunConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    env = os.environ.get("MTFUSE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mtfuse" / "tokenized"


def subset_key(tc: TaskConfig) -> str:
    """The name a task's subsets are seeded by: its own, or that of the task it draws them as
    (``subset_as``), which then keeps the same rows of the same file."""
    return tc.subset_as or tc.name


def subset_rows(rows: list[dict], n: int | None, seed: int, task: str, split: str) -> list[dict]:
    """A seeded random subset of ``n`` rows, kept in file order (same subset every run)."""
    if n is None or n >= len(rows):
        return rows
    rng = np.random.default_rng([seed, zlib.crc32(f"{task}/{split}".encode())])
    keep = np.sort(rng.choice(len(rows), size=n, replace=False))
    return [rows[i] for i in keep]


# Train rows outside the seeded ``subset.train``: rows a run never trained on, so choices (a recipe, a merge's
# hyperparameters) can be made on them and dev stays an unbiased report.
HOLDOUT = "train-holdout"
HOLDOUT_DEFAULT = 1000  # its size when the config has no subset.eval


def holdout_rows(cfg: RunConfig, tc: TaskConfig, rows: list[dict], cap: int | None = None) -> list[dict]:
    """The split 'train-holdout' of ``rows`` (a task's train rows): those outside ``subset.train``, then a seeded
    subset of ``subset.eval`` (default 1,000; at most ``cap``) of them."""
    if cfg.subset.train is None or cfg.subset.train >= len(rows):
        raise DataError(
            f"task '{tc.name}': split '{HOLDOUT}' is the train rows outside subset.train, but the run trains on "
            f"all {len(rows)} train rows (subset.train is not set below that); use 'dev' instead"
        )
    kept = {id(r) for r in subset_rows(rows, cfg.subset.train, cfg.subset.seed, subset_key(tc), "train")}
    rest = [r for r in rows if id(r) not in kept]
    size = cfg.subset.eval or HOLDOUT_DEFAULT
    return subset_rows(
        rest, size if cap is None else min(size, cap), cfg.subset.seed, subset_key(tc), HOLDOUT
    )


def task_splits(tc: TaskConfig) -> list[str]:
    """The splits a task's data provides, with the dev split ``data.dev_from_train`` carves out of train."""
    available = READERS.get(tc.data.format).splits(tc.data)
    if tc.data.dev_from_train is None:
        return available
    if "dev" in available:
        raise ConfigError(
            f"tasks.{tc.name}.data.dev_from_train: the data already has a dev split; drop dev_from_train "
            f"(or the dev file) so that dev is one or the other"
        )
    if "train" not in available:
        raise DataError(f"task '{tc.name}': dev_from_train needs a train split; available: {available}")
    return [s for s in ("train", "dev", "test") if s in ("train", "dev") or s in available]


def _stratify_field(tc: TaskConfig, label_field: str) -> str | None:
    if tc.data.stratify:
        return tc.data.stratify
    ttype = TASK_TYPES.get(tc.type)
    return label_field if ttype.has_vocab and not ttype.token_level else None


def read_task_rows(cfg: RunConfig, task_name: str, split: str) -> list[dict]:
    """One split of a task as rows: read by its reader, label ids mapped to names (``data.label_map``), and
    dev / train carved out of the file's train when ``data.dev_from_train`` says so (the same rows every
    time: seeded, stratified by the label for tasks with classes)."""
    t = next(t for t in cfg.tasks if t.name == task_name)
    reader = READERS.get(t.data.format)
    if split == HOLDOUT:
        return holdout_rows(cfg, t, read_task_rows(cfg, task_name, "train"))
    available = task_splits(t)
    if split not in available:
        raise DataError(f"task '{t.name}': split '{split}' not found; available: {available}")
    carved = t.data.dev_from_train is not None and split in ("train", "dev")
    rows = reader.read(t.data, "train" if carved else split)
    label_field = resolve_fields(t, reader.defaults(t.data))[1]
    rows = TASK_TYPES.get(t.type).map_labels(rows, label_field, t)
    if carved:
        fraction = t.data.dev_from_train
        assert fraction is not None
        stratify = _stratify_field(t, label_field)
        if stratify:
            check_fields(rows, [stratify], f"task '{t.name}' split 'train'")
        if t.data.dev_group:
            check_fields(rows, [t.data.dev_group], f"task '{t.name}' split 'train'")
        dev = set(carve_dev(rows, fraction, t.data.dev_seed, stratify, f"task '{t.name}'", t.data.dev_group))
        rows = [r for i, r in enumerate(rows) if (i in dev) == (split == "dev")]
    return rows


def prepare_tasks(
    cfg: RunConfig,
    tokenizer: Any,
    splits: list[str],
    vocabs: dict[str, list[str] | None] | None = None,
    unseen: dict[str, dict[str, list[str]]] | None = None,
) -> dict[str, TaskData]:
    """Build every task's TaskData with the requested splits tokenised.

    Label vocabularies come from ``vocabs`` (a trained model's heads) when given, else from the full train split,
    so a subset never drops a label. Subsets apply to 'train' (``subset.train``) and other splits
    (``subset.eval``). A label outside the vocabulary is an error, unless ``unseen`` is given (``mtfuse data
    check``): then it is collected there (task -> split -> sorted labels, over the full splits) and appended
    to the vocabulary, so that the check can go on and show it.
    """
    tokenizing = Tokenizing(tokenizer, cache_dir(cfg))
    out: dict[str, TaskData] = {}
    for tc in cfg.tasks:
        reader = READERS.get(tc.data.format)
        text_fields, label_field = resolve_fields(tc, reader.defaults(tc.data))
        ttype = TASK_TYPES.get(tc.type)
        rows_by_split = {s: read_task_rows(cfg, tc.name, s) for s in splits}
        if vocabs is not None and tc.name in vocabs:
            labels = vocabs[tc.name]
        elif ttype.has_vocab:
            train_rows = rows_by_split.get("train") or read_task_rows(cfg, tc.name, "train")
            check_fields(train_rows, [*text_fields, label_field], f"task '{tc.name}' split 'train'")
            labels = ttype.vocab(train_rows, label_field, tc.labels)
        else:
            labels = None
        if ttype.has_vocab and labels is not None and len(labels) < 2 and ttype.name != "multilabel":
            raise DataError(
                f"task '{tc.name}': only one label ({labels}) in train; a classifier needs two or more"
            )
        if unseen is not None and ttype.has_vocab and labels is not None:
            found = _labels_outside(ttype, rows_by_split, label_field, labels)
            if found:
                unseen[tc.name] = found
                labels = [*labels, *sorted({lab for labs in found.values() for lab in labs} - set(labels))]
        task = TaskData(tc, ttype, text_fields, label_field, labels)
        for split, rows in rows_by_split.items():
            if split != HOLDOUT:  # holdout_rows has already taken its subset
                n = cfg.subset.train if split == "train" else cfg.subset.eval
                rows = subset_rows(rows, n, cfg.subset.seed, subset_key(tc), split)
            enc, gold = encode_rows(rows, task, split, tokenizing)
            task.splits[split] = enc
            task.gold[split] = gold or []
        out[tc.name] = task
    return out


def _labels_outside(
    ttype: Any, rows_by_split: dict[str, list[dict]], field: str, vocab: list[str]
) -> dict[str, list[str]]:
    """split -> the labels its rows carry that ``vocab`` lacks (rows without the field are skipped: the
    field checks report them)."""
    known, out = set(vocab), {}
    for split, rows in rows_by_split.items():
        seen: set[str] = set()
        for row in rows:
            if row.get(field) is not None:
                seen.update(ttype.raw_labels(row[field], row["_where"], field))
        if seen - known:
            out[split] = sorted(seen - known)
    return out


def describe_split(task: TaskData, split: str) -> dict[str, Any]:
    """Numbers for `mtfuse data check`: size, label counts or value range, token length statistics."""
    enc: Encoded = task.splits[split]
    lengths = enc.lengths()
    info: dict[str, Any] = {
        "examples": len(enc),
        "tokens_mean": round(float(lengths.mean()), 1),
        "tokens_p95": int(np.percentile(lengths, 95)),
        "tokens_max": int(lengths.max()),
        "truncated": int((lengths >= task.cfg.max_length).sum()),
    }
    gold = task.gold.get(split, [])
    if task.type.name == "regression":
        vals = np.array(gold, dtype=float)
        info["range"] = [round(float(vals.min()), 3), round(float(vals.max()), 3)]
        info["mean"] = round(float(vals.mean()), 3)
    elif task.labels is not None:
        counts: dict[str, int] = {}
        for g in gold:
            for lab in _gold_names(task, g):
                counts[lab] = counts.get(lab, 0) + 1
        info["labels"] = dict(sorted(counts.items()))
    info.update(task.type.describe(task, split))
    return info


def _gold_names(task: TaskData, g: Any) -> list[str]:
    """The label names one example's gold carries (a token task's tags, a multi-label row's labels)."""
    assert task.labels is not None
    if isinstance(g, list):
        return g
    if isinstance(g, np.ndarray):
        return [task.labels[i] for i in np.flatnonzero(g)]
    return [task.labels[g]]


def examples_with(task: TaskData, split: str, labels: list[str]) -> int:
    """How many examples of ``split`` carry one of ``labels`` (`mtfuse data check`: those train lacks)."""
    wanted = set(labels)
    return sum(bool(wanted.intersection(_gold_names(task, g))) for g in task.gold.get(split, []))
