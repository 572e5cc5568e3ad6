"""Token tagging (NER with IOB2 tags): one label per word, on its first sub-word."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.errors import DataError
from mtfuse.tasks.types.base import (
    IGNORE_INDEX,
    TaskType,
    _categorical_ll,
    _gold_index,
    _index,
    _label_probs,
    _probs_row,
    register,
)


@register("token_classification")
class TokenClassification(TaskType):
    """Token tagging (e.g. NER with IOB2 tags): the label goes on each word's first sub-word only."""

    name = "token_classification"
    head = "token_classification"
    token_level = True
    text_fields_allowed = (1,)
    default_metrics = ("seqeval_f1",)
    metrics_allowed = ("seqeval_f1",)

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """The most frequent train tag on every word."""
        top = Counter(t for seq in gold_train for t in seq).most_common(1)[0][0]
        j = (labels or []).index(top)
        return [[j] * len(g) for g in gold]

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

    # -- fusion: a distribution per word; only the words every member saw are fused and scored ------------
    unit = "word"

    def outputs(self, record: dict[str, Any], labels: list[str] | None, where: str) -> np.ndarray:
        assert labels is not None
        words = record.get("probs")
        if not isinstance(words, list):
            raise DataError(f"{where}: 'probs' is not a list of per-word distributions")
        if words and not isinstance(words[0], dict):
            raise DataError(
                f"{where}: 'probs' holds only each word's top probability (written by an older mtfuse); "
                "token ensembles need the full distribution per word: evaluate or train the run again"
            )
        arr = np.array([_probs_row(w, labels, where) for w in words], dtype=np.float64)
        return arr.reshape(len(words), len(labels))

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        assert labels is not None
        return np.array([_gold_index(labels, t, where) for t in gold[:units]], dtype=np.int64)

    def metric_inputs(
        self, decisions: np.ndarray, targets: np.ndarray, example: np.ndarray, labels: list[str] | None
    ) -> tuple[Any, Any]:
        """Tag sequences per sentence (of the sentences with at least one fused word)."""
        assert labels is not None
        lab = np.asarray(labels, dtype=object)
        return _sentences(lab[decisions], example), _sentences(lab[targets], example)

    def example_record(
        self, decisions: np.ndarray, outputs: np.ndarray, labels: list[str] | None
    ) -> dict[str, Any]:
        return self.record(decisions, outputs, labels)

    def complete_record(self, rec: dict[str, Any], member_rec: dict[str, Any]) -> dict[str, Any]:
        """The input words, and 'O' for the words past ``max_length`` (as ``mtfuse.predict`` does)."""
        toks = member_rec.get("tokens")
        if toks is not None:
            rec["tokens"] = toks
            rec["tags"] = rec["tags"] + ["O"] * (len(toks) - len(rec["tags"]))
        return rec

    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """Summed over the labelled (first sub-word) positions."""
        logp = torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])
        gold = labels.reshape(-1).to(logp.device)
        keep = gold != IGNORE_INDEX
        return _categorical_ll(logp[keep], gold[keep], mode, gen)

    def prediction_entropy(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Mean entropy per real token."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        h = -(logp.exp() * logp).sum(-1)
        m = attention_mask.to(h.dtype)
        return (h * m).sum() / m.sum().clamp(min=1)


def _sentences(values: np.ndarray, example: np.ndarray) -> list[list[Any]]:
    """Per-unit values split into per-example lists (examples without units give none)."""
    if len(values) == 0:
        return []
    cuts = np.flatnonzero(np.diff(example)) + 1
    return [list(v) for v in np.split(values, cuts)]
