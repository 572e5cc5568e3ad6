"""Trivial baselines every score is shown beside: the majority class (the train mean for regression).

Each task type says what its trivial prediction is (``TaskType.majority_predictions``)."""

from __future__ import annotations

from typing import Any

from mtfuse.evaluate import score
from mtfuse.tasks.features import TaskData


def majority_predictions(task: TaskData, split: str) -> list[Any]:
    return task.type.majority_predictions(task.gold["train"], task.gold[split], task.labels)


def majority_scores(task: TaskData, split: str = "dev") -> dict[str, float]:
    return score(task, majority_predictions(task, split), task.gold[split])
