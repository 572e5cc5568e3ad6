"""Multi-label classification: a set of labels per example (one sigmoid per label)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.errors import DataError
from mtfuse.tasks.types.base import (
    _EPS,
    TaskType,
    _gold_index,
    _index,
    _label_probs,
    register,
)


@register("multilabel")
class MultiLabel(TaskType):
    """Multi-label classification: a list (or a ',' / '|' separated string) of labels per example."""

    name = "multilabel"
    head = "multilabel"
    default_metrics = ("micro_f1", "macro_f1")
    metrics_allowed = ("micro_f1", "macro_f1", "accuracy")

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """Every label that more than half the train examples carry."""
        freq = np.mean(np.stack(gold_train), axis=0)
        return [(freq >= 0.5).astype(np.int64)] * len(gold)

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

    # -- fusion: a probability per label, each label its own binary decision ------------------------------
    stack_learner = "per_label"

    def same_gold(self, a: Any, b: Any) -> bool:
        return sorted(a) == sorted(b)

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        assert labels is not None
        y = np.zeros((1, len(labels)), dtype=np.float64)
        for lab in gold:
            y[0, _gold_index(labels, lab, where)] = 1.0
        return y

    def decide(self, out: np.ndarray) -> np.ndarray:
        return (out >= 0.5).astype(np.int64)

    def metric_inputs(
        self, decisions: np.ndarray, targets: np.ndarray, example: np.ndarray, labels: list[str] | None
    ) -> tuple[Any, Any]:
        return decisions, targets.astype(np.int64)

    def fused_nll(self, out: np.ndarray, y: np.ndarray) -> float:
        """Binary cross-entropy per label."""
        q = np.clip(out, _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))) if len(y) else 0.0

    def fused_nll_grad(self, P: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
        q = np.clip(np.tensordot(w, P, axes=1), _EPS, 1 - _EPS)
        loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        d = -(y / q - (1 - y) / (1 - q)) / q.size
        return float(loss), np.einsum("mnc,nc->m", P, d)

    def votes(self, out: np.ndarray) -> np.ndarray:
        return (out >= 0.5).astype(np.float64)

    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """Independent Bernoullis, one per label."""
        logits = logits.float()
        p = torch.sigmoid(logits.detach())
        if mode == "sampled":
            y = torch.bernoulli(p.cpu(), generator=gen).to(p.device)
        elif mode == "predicted":
            y = (p >= 0.5).float()
        else:
            y = labels.float().to(logits.device)
        return -F.binary_cross_entropy_with_logits(logits, y, reduction="sum")

    def prediction_entropy(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Mean Bernoulli entropy per label."""
        logits = logits.float()
        p = torch.sigmoid(logits)
        ls, lns = F.logsigmoid(logits), F.logsigmoid(-logits)
        return -(p * ls + (1 - p) * lns).mean()
