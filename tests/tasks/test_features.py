"""Task types, label checks, tokenisation (and its cache), alignment of word tags to sub-words, collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from mtfuse.config import TaskConfig
from mtfuse.errors import ConfigError, DataError
from mtfuse.model import resolve_model_path
from mtfuse.tasks.features import (
    TaskData,
    Tokenizing,
    align_token_labels,
    collate,
    encode_rows,
    resolve_fields,
)
from mtfuse.tasks.types import IGNORE_INDEX, TASK_TYPES


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(resolve_model_path("default"))


def make_task(type_: str, text_fields: list[str], label_field: str = "label", labels=None) -> TaskData:
    cfg = TaskConfig(
        name="t", type=type_, data={"format": "jsonl"}, text_fields=text_fields, label_field=label_field
    )
    ttype = TASK_TYPES.get(type_)
    return TaskData(cfg, ttype, text_fields, label_field, labels)


def rows(*dicts: dict) -> list[dict]:
    return [{**d, "_where": f"f.jsonl:{i + 1}"} for i, d in enumerate(dicts)]


def test_classification_vocab_and_unknown_dev_label(tok, tmp_path: Path) -> None:
    task = make_task("classification", ["text"])
    train = rows({"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"})
    task.labels = task.type.vocab(train, "label", None)
    assert task.labels == ["neg", "pos"]
    enc, gold = encode_rows(train, task, "train", Tokenizing(tok, tmp_path))
    assert gold == [1, 0] and enc.labels == [1, 0]
    with pytest.raises(
        DataError, match=r"f.jsonl:2 \(field 'label'\): label 'meh' in split 'dev' is not among"
    ):
        encode_rows(
            rows({"text": "x", "label": "pos"}, {"text": "y", "label": "meh"}),
            task,
            "dev",
            Tokenizing(tok, None),
        )


def test_regression_rejects_non_numeric_targets(tok) -> None:
    task = make_task("regression", ["a", "b"])
    enc, gold = encode_rows(rows({"a": "x", "b": "y", "label": "3.5"}), task, "train", Tokenizing(tok, None))
    assert gold == [3.5]
    with pytest.raises(
        DataError, match=r"f.jsonl:1 \(field 'label'\): regression target 'high' is not a number"
    ):
        encode_rows(rows({"a": "x", "b": "y", "label": "high"}), task, "train", Tokenizing(tok, None))


def test_missing_column_and_empty_split(tok) -> None:
    task = make_task("classification", ["text"], labels=["a", "b"])
    with pytest.raises(
        DataError, match=r"f.jsonl:1: missing column 'text' \(columns present: \['label', 'txt'\]\)"
    ):
        encode_rows(rows({"txt": "x", "label": "a"}), task, "train", Tokenizing(tok, None))
    with pytest.raises(DataError, match="split is empty"):
        encode_rows([], task, "train", Tokenizing(tok, None))


def test_pair_tokenisation_uses_segment_ids(tok) -> None:
    task = make_task("pair_classification", ["s1", "s2"], labels=["0", "1"])
    enc, _ = encode_rows(
        rows({"s1": "a cat", "s2": "a dog", "label": "1"}), task, "train", Tokenizing(tok, None)
    )
    ids, tt = enc.input_ids[0], enc.token_type_ids[0]
    assert tok.decode(ids) == "[CLS] a cat [SEP] a dog [SEP]"
    assert tt.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_text_field_count_checked() -> None:
    cfg = TaskConfig(
        name="t", type="pair_classification", data={"format": "tsv"}, text_fields=["a"], label_field="l"
    )
    with pytest.raises(ConfigError, match="takes 2 text field"):
        resolve_fields(cfg, (None, None))
    cfg2 = TaskConfig(name="t", type="classification", data={"format": "tsv"})
    with pytest.raises(ConfigError, match="tasks.t.text_fields: required"):
        resolve_fields(cfg2, (None, None))


def test_token_labels_on_first_subword_only(tok) -> None:
    task = make_task("token_classification", ["tokens"], "tags", labels=["B-PER", "I-PER", "O"])
    enc, gold = encode_rows(
        rows({"tokens": ["Johanssonovich", "runs"], "tags": ["B-PER", "O"]}),
        task,
        "train",
        Tokenizing(tok, None),
    )
    wids, labs = enc.word_ids[0], enc.labels[0]
    assert gold == [["B-PER", "O"]]
    first = [i for i in range(len(wids)) if wids[i] >= 0 and (i == 0 or wids[i] != wids[i - 1])]
    assert [labs[i] for i in first] == [0, 2]
    assert all(labs[i] == IGNORE_INDEX for i in range(len(labs)) if i not in first)
    assert (wids == 0).sum() > 1  # the long name really is split into several sub-words
    with pytest.raises(DataError, match="2 tokens but 1 tags"):
        encode_rows(rows({"tokens": ["a", "b"], "tags": ["O"]}), task, "train", Tokenizing(tok, None))


def test_align_token_labels_pure() -> None:
    out = align_token_labels(np.array([-1, 0, 0, 1, -1]), np.array([5, 7]))
    assert out.tolist() == [IGNORE_INDEX, 5, IGNORE_INDEX, 7, IGNORE_INDEX]


def test_multilabel_encoding(tok) -> None:
    task = make_task("multilabel", ["text"])
    train = rows({"text": "a", "label": ["x", "y"]}, {"text": "b", "label": "z|x"})
    task.labels = task.type.vocab(train, "label", None)
    enc, _ = encode_rows(train, task, "train", Tokenizing(tok, None))
    assert task.labels == ["x", "y", "z"]
    assert enc.labels[1].tolist() == [1.0, 0.0, 1.0]


def test_tokenisation_cache_is_reused_and_keyed_by_content(tok, tmp_path: Path) -> None:
    tz = Tokenizing(tok, tmp_path)
    texts = [("hello world",), ("another one",)]
    first = tz.encode(texts, False, 32)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = Tokenizing(tok, tmp_path).encode(texts, False, 32)
    assert [a.tolist() for a in second.input_ids] == [a.tolist() for a in first.input_ids]
    assert files[0].stat().st_mtime_ns == mtime  # read, not rewritten
    Tokenizing(tok, tmp_path).encode([("hello world",), ("changed",)], False, 32)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    files[0].write_bytes(b"garbage")  # a damaged entry is re-made, not trusted
    again = Tokenizing(tok, tmp_path).encode(texts, False, 32)
    assert [a.tolist() for a in again.input_ids] == [a.tolist() for a in first.input_ids]


def test_collate_pads_dynamically(tok) -> None:
    task = make_task("token_classification", ["tokens"], "tags", labels=["O", "X"])
    enc, _ = encode_rows(
        rows({"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b", "c"], "tags": ["O", "X", "O"]}),
        task,
        "train",
        Tokenizing(tok, None),
    )
    batch = collate(enc, [0, 1], tok.pad_token_id, task.type)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    small = collate(enc, [0], tok.pad_token_id, task.type)
    assert small["input_ids"].shape == (1, 3)
    assert small["labels"].dtype == torch.long
