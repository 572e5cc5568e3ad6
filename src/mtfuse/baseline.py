"""Trivial baselines every score is shown beside: the majority class (the train mean for regression)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from mtfuse.evaluate import score
from mtfuse.tasks.features import TaskData


def majority_predictions(task: TaskData, split: str) -> list[Any]:
    gold_train, gold = task.gold["train"], task.gold[split]
    if task.type.token_level:
        top = Counter(t for seq in gold_train for t in seq).most_common(1)[0][0]
        j = (task.labels or []).index(top)
        return [[j] * len(g) for g in gold]
    if task.labels is None:
        return [float(np.mean(gold_train))] * len(gold)
    if task.type.name == "multilabel":
        freq = np.mean(np.stack(gold_train), axis=0)
        return [(freq >= 0.5).astype(np.int64)] * len(gold)
    top = Counter(int(g) for g in gold_train).most_common(1)[0][0]
    return [top] * len(gold)


def majority_scores(task: TaskData, split: str = "dev") -> dict[str, float]:
    return score(task, majority_predictions(task, split), task.gold[split])
