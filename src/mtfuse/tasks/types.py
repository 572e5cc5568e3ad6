"""Task types: how labels are read and checked, which head a task gets, its loss and its predictions.

A registry, so new types (generation, multiple choice, span QA) plug in without touching the loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.errors import DataError
from mtfuse.registry import Registry

TASK_TYPES: Registry[TaskType] = Registry("task type")  # holds one instance per type
IGNORE_INDEX = -100  # positions without a label (padding, non-first sub-words)


def register(name: str):
    def deco(cls: type[TaskType]) -> type[TaskType]:
        TASK_TYPES.register(name)(cls())
        return cls

    return deco


class TaskType:
    name: str = ""
    head: str = ""
    token_level = False
    text_fields_allowed: tuple[int, ...] = (1, 2)
    default_metrics: tuple[str, ...] = ()
    metrics_allowed: tuple[str, ...] = ()  # the metrics whose inputs this type's predictions fit
    has_vocab = True

    # -- labels --------------------------------------------------------------------------------------
    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        """The label strings a row carries (one for classification, several for multi-label / token)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where} (field '{field}'): empty label")
        return [str(value).strip()]

    def vocab(self, train_rows: list[dict], field: str, fixed: list[str] | None) -> list[str] | None:
        if fixed is not None:
            return list(fixed)
        seen: set[str] = set()
        for row in train_rows:
            seen.update(self.raw_labels(row.get(field), row["_where"], field))
        return sorted(seen)

    def encode_label(self, value: Any, vocab: list[str] | None, where: str, field: str, split: str) -> Any:
        assert vocab is not None
        (lab,) = self.raw_labels(value, where, field)
        return _index(lab, vocab, where, field, split)

    def num_outputs(self, vocab: list[str] | None) -> int:
        assert vocab is not None
        return len(vocab)

    def metric_fits(self, metric: str) -> bool:
        return metric in self.metrics_allowed

    def metric_fits_labels(self, metric: str, labels: list[str] | None) -> bool:
        """Whether ``metric`` can score a task with these labels (binary F1 needs exactly two)."""
        return True

    # -- training and prediction -----------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        return torch.tensor(labels, dtype=torch.long)

    def predict(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, probabilities) as numpy arrays from a batch of logits."""
        probs = torch.softmax(logits.float(), dim=-1)
        return probs.argmax(-1).cpu().numpy(), probs.cpu().numpy()

    # -- JSON records (predictions/<task>.jsonl) --------------------------------------------------------
    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        """One example's prediction: the label by name and a probability per label."""
        assert labels is not None
        return {"label": labels[int(pred)], "probs": _label_probs(labels, prob)}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        assert labels is not None
        return labels[int(gold)]


def _label_probs(labels: list[str], prob: Any) -> dict[str, float]:
    return {lab: round(float(x), 6) for lab, x in zip(labels, prob, strict=True)}


def _index(lab: str, vocab: list[str], where: str, field: str, split: str) -> int:
    try:
        return vocab.index(lab)
    except ValueError:
        shown = vocab if len(vocab) <= 20 else vocab[:20] + ["..."]
        raise DataError(
            f"{where} (field '{field}'): label '{lab}' in split '{split}' is not among the train labels {shown}"
        ) from None


@register("classification")
class Classification(TaskType):
    """Single-sentence or sentence-pair classification (one label per example)."""

    name = "classification"
    head = "classification"
    default_metrics = ("accuracy",)
    metrics_allowed = ("accuracy", "f1", "matthews", "micro_f1", "macro_f1")

    def metric_fits_labels(self, metric: str, labels: list[str] | None) -> bool:
        return metric != "f1" or len(labels or []) == 2  # binary F1 of the positive class


@register("pair_classification")
class PairClassification(Classification):
    """Sentence-pair classification: two text fields, encoded as one [CLS] a [SEP] b [SEP] input."""

    name = "pair_classification"
    text_fields_allowed = (2,)


@register("regression")
class Regression(TaskType):
    name = "regression"
    head = "regression"
    default_metrics = ("pearson", "spearman")
    metrics_allowed = ("pearson", "spearman")
    has_vocab = False

    def vocab(self, train_rows: list[dict], field: str, fixed: list[str] | None) -> list[str] | None:
        return None

    def encode_label(self, value: Any, vocab: list[str] | None, where: str, field: str, split: str) -> float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"{where} (field '{field}'): regression target '{value}' is not a number"
            ) from None
        if not np.isfinite(out):
            raise DataError(f"{where} (field '{field}'): regression target '{value}' is not finite")
        return out

    def num_outputs(self, vocab: list[str] | None) -> int:
        return 1

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        return torch.tensor(labels, dtype=torch.float32)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.float().view(-1), labels.float().view(-1))

    def predict(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        v = logits.float().view(-1).cpu().numpy()
        return v, v

    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        return {"score": float(pred)}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        return float(gold)


@register("multilabel")
class MultiLabel(TaskType):
    """Multi-label classification: a list (or a ',' / '|' separated string) of labels per example."""

    name = "multilabel"
    head = "multilabel"
    default_metrics = ("micro_f1", "macro_f1")
    metrics_allowed = ("micro_f1", "macro_f1", "accuracy")

    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value if str(v).strip()]
        if value is None:
            raise DataError(f"{where} (field '{field}'): missing label list")
        text = str(value)
        sep = "|" if "|" in text else ","
        return [p.strip() for p in text.split(sep) if p.strip()]

    def encode_label(
        self, value: Any, vocab: list[str] | None, where: str, field: str, split: str
    ) -> np.ndarray:
        assert vocab is not None
        out = np.zeros(len(vocab), dtype=np.float32)
        for lab in self.raw_labels(value, where, field):
            out[_index(lab, vocab, where, field, split)] = 1.0
        return out

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        return torch.from_numpy(np.stack(labels))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def predict(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        probs = torch.sigmoid(logits.float()).cpu().numpy()
        return (probs >= 0.5).astype(np.int64), probs

    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        assert labels is not None
        return {"labels": [labels[j] for j in np.flatnonzero(pred)], "probs": _label_probs(labels, prob)}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        assert labels is not None
        return [labels[j] for j in np.flatnonzero(gold)]


@register("token_classification")
class TokenClassification(TaskType):
    """Token tagging (e.g. NER with IOB2 tags): the label goes on each word's first sub-word only."""

    name = "token_classification"
    head = "token_classification"
    token_level = True
    text_fields_allowed = (1,)
    default_metrics = ("seqeval_f1",)
    metrics_allowed = ("seqeval_f1",)

    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        if not isinstance(value, (list, tuple)):
            if isinstance(value, str):
                return value.split()
            raise DataError(f"{where} (field '{field}'): expected a list of tags")
        return [str(v) for v in value]

    def encode_label(
        self, value: Any, vocab: list[str] | None, where: str, field: str, split: str
    ) -> np.ndarray:
        assert vocab is not None
        return np.array(
            [_index(t, vocab, where, field, split) for t in self.raw_labels(value, where, field)],
            dtype=np.int64,
        )

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        out = torch.full((len(labels), seq_len), IGNORE_INDEX, dtype=torch.long)
        for r, lab in enumerate(labels):
            out[r, : len(lab)] = torch.from_numpy(lab)
        return out

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)

    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        """Word-level ``tags`` and, per word, the full ``{label: probability}`` (ensembles average these)."""
        assert labels is not None
        return {"tags": [labels[j] for j in pred], "probs": [_label_probs(labels, w) for w in prob]}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        return gold  # already tag strings
