"""Multiple choice (COPA, SWAG): a context and C choices, the label is the index of the right choice.

Each example is encoded as C (context, choice) pairs (:meth:`MultipleChoice.example_texts`), collated as
``[B * C, T]`` for the encoder; the ``multiple_choice`` head scores each pair (pooled -> dropout -> Linear(H, 1),
as ``BertForMultipleChoice``) and reshapes the scores to ``[B, C]``. The loss is the cross-entropy of the softmax
over the choices. The labels are the choice indices as strings (``"0"`` ... ``"C-1"``), so predictions, records,
ensembles (averaged choice probabilities), Fisher merging and AdaMerging behave as classification with
``C`` = the number of choices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtfuse.errors import DataError
from mtfuse.tasks.types.base import TaskType, _index, _label_probs, register


@register("multiple_choice")
class MultipleChoice(TaskType):
    """A context and a list of choices (text fields ``[context, choices]``); the label: the right choice's index
    (0-based). Every example of a task has the same number of choices (the head's number of outputs)."""

    name = "multiple_choice"
    head = "multiple_choice"
    text_fields_allowed = (2,)
    default_metrics = ("accuracy",)
    metrics_allowed = ("accuracy",)

    # -- inputs: one (context, choice) pair per choice -------------------------------------------------
    def example_texts(self, values: list[Any], where: str, fields: list[str]) -> list[tuple[str, ...]]:
        context, choices = values
        if not isinstance(context, str) or not context.strip():
            raise DataError(f"{where} (field '{fields[0]}'): expected the context as a non-empty string")
        if not isinstance(choices, (list, tuple)) or len(choices) < 2:
            raise DataError(f"{where} (field '{fields[1]}'): expected a list of two or more choices")
        for j, c in enumerate(choices):
            if not isinstance(c, str) or not c.strip():
                raise DataError(f"{where} (field '{fields[1]}'): choice {j} is empty or not a string")
        return [(context, c) for c in choices]

    # -- labels: the index of the right choice ---------------------------------------------------------
    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        if isinstance(value, bool):
            raise DataError(f"{where} (field '{field}'): expected a choice index (0, 1, ...), got {value!r}")
        j = -1
        if isinstance(value, float) and value.is_integer():
            j = int(value)
        elif isinstance(value, (int, str)):
            try:
                j = int(str(value).strip())
            except ValueError:
                pass
        if j < 0:
            raise DataError(
                f"{where} (field '{field}'): expected the index of the right choice (0, 1, ...), "
                f"got {str(value)[:60]!r}"
            )
        return [str(j)]

    def vocab(self, train_rows: list[dict], field: str, fixed: list[str] | None) -> list[str] | None:
        """``["0", ..., "C-1"]`` with C the highest train choice index + 1 (at least 2); the number of choices
        each example has is checked against it when the rows are encoded."""
        if fixed is not None:
            return list(fixed)
        top = max(int(self.raw_labels(r.get(field), r["_where"], field)[0]) for r in train_rows)
        return [str(j) for j in range(max(top + 1, 2))]

    def encode_label(self, value: Any, vocab: list[str] | None, where: str, field: str, split: str) -> int:
        assert vocab is not None
        (lab,) = self.raw_labels(value, where, field)
        return _index(lab, vocab, where, field, split)

    # -- records: the chosen index and a probability per choice ------------------------------------------
    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        assert labels is not None
        return {"label": labels[int(pred)], "choice": int(pred), "probs": _label_probs(labels, prob)}

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """The most frequent right choice in train (COPA: balanced, so about the first alternative)."""
        counts = np.bincount(np.asarray(gold_train, dtype=np.int64), minlength=len(labels or []))
        return [int(counts.argmax())] * len(gold)
