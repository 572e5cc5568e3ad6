"""Read, check, subset and tokenise every task of a config: the one entry point from config to TaskData."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mtfuse.config import RunConfig
from mtfuse.errors import DataError
from mtfuse.tasks.features import Encoded, TaskData, Tokenizing, check_fields, encode_rows, resolve_fields
from mtfuse.tasks.readers import READERS
from mtfuse.tasks.types import TASK_TYPES


def cache_dir(cfg: RunConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    env = os.environ.get("MTFUSE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mtfuse" / "tokenized"


def subset_rows(rows: list[dict], n: int | None, seed: int, task: str, split: str) -> list[dict]:
    """A seeded random subset of ``n`` rows, kept in file order (same subset every run)."""
    if n is None or n >= len(rows):
        return rows
    rng = np.random.default_rng([seed, zlib.crc32(f"{task}/{split}".encode())])
    keep = np.sort(rng.choice(len(rows), size=n, replace=False))
    return [rows[i] for i in keep]


def read_task_rows(cfg: RunConfig, task_name: str, split: str) -> list[dict]:
    t = next(t for t in cfg.tasks if t.name == task_name)
    reader = READERS.get(t.data.format)
    available = reader.splits(t.data)
    if split not in available:
        raise DataError(f"task '{t.name}': split '{split}' not found; available: {available}")
    return reader.read(t.data, split)


def prepare_tasks(
    cfg: RunConfig,
    tokenizer: Any,
    splits: list[str],
    vocabs: dict[str, list[str] | None] | None = None,
) -> dict[str, TaskData]:
    """Build every task's TaskData with the requested splits tokenised.

    Label vocabularies come from ``vocabs`` (a trained model's heads) when given, else from the full train split,
    so a subset never drops a label. Subsets apply to 'train' (``subset.train``) and other splits
    (``subset.eval``).
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
        task = TaskData(tc, ttype, text_fields, label_field, labels)
        for split, rows in rows_by_split.items():
            n = cfg.subset.train if split == "train" else cfg.subset.eval
            rows = subset_rows(rows, n, cfg.subset.seed, tc.name, split)
            enc, gold = encode_rows(rows, task, split, tokenizing)
            task.splits[split] = enc
            task.gold[split] = gold or []
        out[tc.name] = task
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
            items = (
                g
                if isinstance(g, list)
                else (
                    [task.labels[i] for i in np.flatnonzero(g)]
                    if isinstance(g, np.ndarray)
                    else [task.labels[g]]
                )
            )
            for lab in items:
                counts[lab] = counts.get(lab, 0) + 1
        info["labels"] = dict(sorted(counts.items()))
    return info
