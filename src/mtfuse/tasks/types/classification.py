"""Single-sentence and sentence-pair classification: one label per example (softmax, cross-entropy)."""

from __future__ import annotations

from mtfuse.tasks.types.base import (
    TaskType,
    register,
)


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
