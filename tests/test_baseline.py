"""The trivial baselines printed beside every score: each task type's majority prediction."""

from __future__ import annotations

import numpy as np

from mtfuse.tasks.types import TASK_TYPES


def test_majority_predictions_per_task_type() -> None:
    t = TASK_TYPES.get
    assert t("classification").majority_predictions([0, 1, 1, 2], [0, 0, 2], ["a", "b", "c"]) == [1, 1, 1]
    assert t("regression").majority_predictions([1.0, 2.0, 6.0], [0.0, 5.0], None) == [3.0, 3.0]
    ml = t("multilabel").majority_predictions(
        [np.array([1, 0, 1]), np.array([1, 0, 0]), np.array([1, 1, 0])], [None, None], ["x", "y", "z"]
    )
    assert [list(m) for m in ml] == [[1, 0, 0], [1, 0, 0]]
    tags = t("token_classification").majority_predictions(
        [["O", "B-PER"], ["O", "O"]], [["O", "O", "B-PER"]], ["B-PER", "O"]
    )
    assert tags == [[1, 1, 1]]
