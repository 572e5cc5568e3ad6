"""From rows to model inputs: field checks, label encoding, tokenisation (cached on disk) and collation.

The cache is keyed by the rows' content, the tokenizer and the task settings, so a second run with the same
data skips tokenisation and any change to the data invalidates it. Cache files are plain ``.npz`` arrays
(loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtfuse.batching import pad_inputs
from mtfuse.config import TaskConfig
from mtfuse.errors import ConfigError, DataError
from mtfuse.tasks.types import IGNORE_INDEX, TASK_TYPES, TaskType


@dataclass
class Encoded:
    """One tokenised split of one task. ``labels`` is None for unlabelled input (prediction).

    ``group``: sequences per example (multiple choice: one per choice); example ``i`` is then the sequences
    ``i * group`` ... ``i * group + group - 1`` of ``input_ids`` / ``token_type_ids``."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: list[Any] | None
    word_ids: list[np.ndarray] | None = None  # token tasks: word index of each sub-token, -1 for specials
    n_words: list[int] | None = None  # token tasks: words in the (untruncated) example
    group: int = 1
    #: arrays a task type's own encoding adds (``TaskType.encode_rows``), read by its ``collate``
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids) // self.group

    def lengths(self) -> np.ndarray:
        """Tokens per example (the longest of its sequences when it has several)."""
        out = np.array([len(x) for x in self.input_ids], dtype=np.int64)
        return out if self.group == 1 else out.reshape(-1, self.group).max(axis=1)


@dataclass
class TaskData:
    """A task ready for training/evaluation: its config, type, fields, label vocabulary and splits."""

    cfg: TaskConfig
    type: TaskType
    text_fields: list[str]
    label_field: str
    labels: list[str] | None
    splits: dict[str, Encoded] = field(default_factory=dict)
    gold: dict[str, list[Any]] = field(default_factory=dict)  # raw gold labels per split (for metrics)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def metrics(self) -> list[str]:
        return list(self.cfg.metrics or self.type.default_metrics)

    def examples(self, split: str) -> int:
        """How many examples a split holds: one gold per example (a span-QA question, however many windows
        its context takes), else the encoded units when the split has no labels."""
        return len(self.gold.get(split) or ()) or len(self.splits[split])


def resolve_fields(cfg: TaskConfig, defaults: tuple[list[str] | None, str | None]) -> tuple[list[str], str]:
    ttype = TASK_TYPES.get(cfg.type)
    text_fields = cfg.text_fields or defaults[0]
    label_field = cfg.label_field or defaults[1]
    if not text_fields:
        raise ConfigError(f"tasks.{cfg.name}.text_fields: required for data format '{cfg.data.format}'")
    if not label_field and not ttype.labelled:
        label_field = ""  # the type reads text only (masked_lm): a label in the rows is ignored
    elif not label_field:
        raise ConfigError(f"tasks.{cfg.name}.label_field: required for data format '{cfg.data.format}'")
    if len(text_fields) not in ttype.text_fields_allowed:
        raise ConfigError(
            f"tasks.{cfg.name}.text_fields: task type '{cfg.type}' takes "
            f"{' or '.join(map(str, ttype.text_fields_allowed))} text field(s), got {text_fields}"
        )
    return list(text_fields), label_field


def check_fields(rows: list[dict], fields: list[str], source: str) -> None:
    """Every row must carry every field; name the first row (file:line) that does not."""
    for row in rows:
        for f in fields:
            if f not in row:
                present = sorted(k for k in row if not k.startswith("_"))
                raise DataError(f"{row['_where']}: missing column '{f}' (columns present: {present})")
    if not rows:
        raise DataError(f"{source}: the split is empty")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def texts_of(
    rows: list[dict], fields: list[str], token_level: bool, ttype: TaskType | None = None
) -> list[Any]:
    """Texts as tuples (one string per field), or token lists for token-level tasks, or (a type whose
    examples are several sequences, ``ttype.example_texts``) a list of such tuples per example.

    A text is a string (a number is taken as its digits); anything else (a list, a mapping: parquet, jsonl
    and Hugging Face columns may hold them) is an error naming the row and field, never its printed form."""
    out: list[Any] = []
    for row in rows:
        if ttype is not None:
            several = ttype.example_texts([row[f] for f in fields], row["_where"], fields)
            if several is not None:
                out.append(several)
                continue
        vals = []
        for f in fields:
            v = row[f]
            if token_level:
                v = v.split() if isinstance(v, str) else v
                if not isinstance(v, (list, tuple)) or not all(isinstance(t, str) for t in v):
                    raise DataError(f"{row['_where']} (field '{f}'): expected a list of tokens")
                vals.append(list(v))
                continue
            if v is None:
                raise DataError(f"{row['_where']} (field '{f}'): empty text")
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                kind = "a list" if isinstance(v, (list, tuple)) else f"a {type(v).__name__}"
                raise DataError(
                    f"{row['_where']} (field '{f}'): expected text (a string), got {kind} {_shown(v)}; "
                    f"join it into one string first (a list of words is the input of a token task)"
                )
            vals.append(str(v))
        out.append(vals[0] if token_level else tuple(vals))
    return out


class Tokenizing:
    """Tokenise texts with a fast tokenizer, caching the result under ``cache_dir``."""

    def __init__(self, tokenizer: Any, cache_dir: str | os.PathLike[str] | None) -> None:
        self.tok = tokenizer
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # The tokenizer's JSON minus its truncation/padding settings, which change as soon as it is called.
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        self._tok_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def encode(self, texts: list[Any], token_level: bool, max_length: int, group: int = 1) -> Encoded:
        """``group`` > 1: ``texts`` holds ``group`` consecutive sequences per example."""
        key = self._key(texts, token_level, max_length, group)
        cached = self._load(key)
        if cached is not None:
            return cached
        enc = self._tokenize(texts, token_level, max_length)
        enc.group = group
        self._save(key, enc)
        return enc

    def _key(self, texts: list[Any], token_level: bool, max_length: int, group: int = 1) -> str:
        h = hashlib.sha256()
        # version 2 of token-level encodings: words without sub-words are the unknown token (were dropped)
        head = [self._tok_hash, token_level, max_length, 2 if token_level else 1]
        h.update(json.dumps(head if group == 1 else [*head, {"group": group}]).encode())
        for t in texts:
            h.update(json.dumps(t, ensure_ascii=False).encode())
            h.update(b"\x00")
        return h.hexdigest()[:32]

    def _tokenize(self, texts: list[Any], token_level: bool, max_length: int) -> Encoded:
        if token_level:
            return self._tokenize_words(texts, max_length)
        cols = list(zip(*texts, strict=True))
        second = list(cols[1]) if len(cols) > 1 else None
        out = self.tok(list(cols[0]), second, truncation=True, max_length=max_length)
        ids = [np.array(x, dtype=np.int64) for x in out["input_ids"]]
        tt = [np.array(x, dtype=np.int64) for x in out["token_type_ids"]] if "token_type_ids" in out else None
        return Encoded(ids, tt, None, None, None)

    def _tokenize_words(self, texts: list[list[str]], max_length: int) -> Encoded:
        """Words to sub-words. A word the tokenizer turns into nothing (a lone control or zero-width
        character such as U+200B) is given the unknown token instead, so that it keeps its slot: had it no
        sub-word, every later word's prediction would move one word back and be scored against the wrong tag."""
        ids, tt, word_ids = self._words_to_ids(texts, max_length)
        fixed: dict[int, list[str]] = {}
        for i, t in enumerate(texts):
            seen = set(word_ids[i][word_ids[i] >= 0].tolist())
            if len(seen) == len(t):
                continue
            # Words past the last one seen may just be cut by max_length; words before it are empty.
            cut = len(ids[i]) >= max_length
            upto = max(seen, default=-1) if cut else len(t)
            empty = {w for w in range(upto) if w not in seen}
            if empty:
                fixed[i] = [self._unk if w in empty else word for w, word in enumerate(t)]
        if fixed:
            again = self._words_to_ids(list(fixed.values()), max_length)
            for j, i in enumerate(fixed):
                ids[i], word_ids[i] = again[0][j], again[2][j]
                if tt is not None and again[1] is not None:
                    tt[i] = again[1][j]
        return Encoded(ids, tt, None, word_ids, [len(t) for t in texts])

    @property
    def _unk(self) -> str:
        return self.tok.unk_token or "?"

    def _words_to_ids(
        self, texts: list[list[str]], max_length: int
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[np.ndarray]]:
        out = self.tok(texts, is_split_into_words=True, truncation=True, max_length=max_length)
        word_ids = [
            np.array([-1 if w is None else w for w in out.word_ids(i)], dtype=np.int64)
            for i in range(len(texts))
        ]
        ids = [np.array(x, dtype=np.int64) for x in out["input_ids"]]
        tt = [np.array(x, dtype=np.int64) for x in out["token_type_ids"]] if "token_type_ids" in out else None
        return ids, tt, word_ids

    # -- cache: concatenated arrays + offsets in one .npz, written atomically ---------------------------
    def _path(self, key: str) -> Path | None:
        return self.cache_dir / f"{key}.npz" if self.cache_dir else None

    def _load(self, key: str) -> Encoded | None:
        p = self._path(key)
        if p is None or not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                offs = z["offsets"]
                ids = np.split(z["input_ids"], offs[1:-1])
                tt = np.split(z["token_type_ids"], offs[1:-1]) if "token_type_ids" in z else None
                wi = np.split(z["word_ids"], offs[1:-1]) if "word_ids" in z else None
                nw = z["n_words"].tolist() if "n_words" in z else None
                group = int(z["group"]) if "group" in z else 1
        except (OSError, ValueError, KeyError):
            return None  # a damaged cache entry is re-made, never trusted
        if len(ids) % group:
            return None
        return Encoded(
            list(ids),
            list(tt) if tt is not None else None,
            None,
            list(wi) if wi is not None else None,
            nw,
            group,
        )

    def _save(self, key: str, enc: Encoded) -> None:
        p = self._path(key)
        if p is None:
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in enc.input_ids])]).astype(np.int64)
        arrays: dict[str, np.ndarray] = {"offsets": offsets, "input_ids": np.concatenate(enc.input_ids)}
        if enc.token_type_ids is not None:
            arrays["token_type_ids"] = np.concatenate(enc.token_type_ids)
        if enc.word_ids is not None:
            arrays["word_ids"] = np.concatenate(enc.word_ids)
            arrays["n_words"] = np.array(enc.n_words, dtype=np.int64)
        if enc.group != 1:
            arrays["group"] = np.array(enc.group, dtype=np.int64)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def align_token_labels(word_ids: np.ndarray, word_labels: np.ndarray) -> np.ndarray:
    """Label each word's first sub-word; every other position gets IGNORE_INDEX."""
    out = np.full(len(word_ids), IGNORE_INDEX, dtype=np.int64)
    prev = -1
    for i, w in enumerate(word_ids):
        if w >= 0 and w != prev:
            out[i] = word_labels[w]
        prev = w
    return out


def encode_rows(
    rows: list[dict],
    task: TaskData,
    split: str,
    tokenizing: Tokenizing,
    with_labels: bool = True,
) -> tuple[Encoded, list[Any] | None]:
    """Tokenise rows of one split and encode their labels (checked against the task's vocabulary)."""
    ttype = task.type
    fields = task.text_fields + ([task.label_field] if with_labels and ttype.labelled else [])
    check_fields(rows, fields, f"task '{task.name}' split '{split}'")
    own = ttype.encode_rows(rows, task, split, tokenizing, with_labels)
    if own is not None:
        return own
    texts = texts_of(rows, task.text_fields, ttype.token_level, ttype)
    group = _group_size(rows, texts, task)
    if group == 1:
        enc = tokenizing.encode(texts, ttype.token_level, task.cfg.max_length)
    else:
        flat = [t for several in texts for t in several]
        enc = tokenizing.encode(flat, ttype.token_level, task.cfg.max_length, group)
    if not with_labels:
        return enc, None
    labels, gold = [], []
    for i, row in enumerate(rows):
        y = ttype.encode_label(row[task.label_field], task.labels, row["_where"], task.label_field, split)
        if ttype.token_level:
            if len(y) != len(texts[i]):
                raise DataError(
                    f"{row['_where']}: {len(texts[i])} tokens but {len(y)} tags (field '{task.label_field}')"
                )
            gold.append([task.labels[j] for j in y])  # type: ignore[index]
            y = align_token_labels(enc.word_ids[i], y)  # type: ignore[index]
        else:
            gold.append(y)
        labels.append(y)
    enc.labels = labels
    return enc, gold


def _group_size(rows: list[dict], texts: list[Any], task: TaskData) -> int:
    """Sequences per example: 1, or (examples of several sequences) their number, the same for every
    example and equal to the head's outputs (one score per choice)."""
    if not texts or not isinstance(texts[0], list) or task.type.token_level:
        return 1
    n = len(texts[0])
    expected = task.type.num_outputs(task.labels) if task.labels is not None else n
    for row, several in zip(rows, texts, strict=True):
        if len(several) != expected:
            raise DataError(
                f"{row['_where']} (field '{task.text_fields[-1]}'): {len(several)} choices, but the task has "
                f"{expected} (every example needs the same number: one score per choice)"
            )
    return n


def collate(
    enc: Encoded,
    idx: np.ndarray | list[int],
    pad_id: int,
    ttype: TaskType,
    draw: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest sequence (dynamic padding). Examples of several sequences
    (``enc.group`` > 1) give ``group`` rows each: inputs ``[B * group, T]``, labels one per example.
    ``draw``: a training batch's (stream seed, epoch), for types whose batches are random (``TaskType.collate``)."""
    own = ttype.collate(enc, list(idx), pad_id, draw)
    if own is not None:
        return own
    examples = list(idx)
    g = enc.group
    idx = examples if g == 1 else [i * g + c for i in examples for c in range(g)]
    batch = pad_inputs(enc.input_ids, enc.token_type_ids, idx, pad_id)
    n = batch["input_ids"].shape[1]
    if enc.labels is not None:
        batch["labels"] = ttype.collate_labels([enc.labels[i] for i in examples], n)
    return batch
