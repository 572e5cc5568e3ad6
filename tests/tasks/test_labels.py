"""Label values of the wrong shape are errors naming the row and field, never a silent string label."""

from __future__ import annotations

import pytest

from mtfuse.errors import DataError
from mtfuse.tasks.types import TASK_TYPES


@pytest.mark.parametrize("value", [["a"], ("a", "b"), {"x": 1}])
@pytest.mark.parametrize("ttype", ["classification", "pair_classification"])
def test_a_list_in_a_single_label_column_is_an_error(ttype: str, value: object) -> None:
    with pytest.raises(DataError, match=r"train.jsonl:3 \(field 'label'\): expected one label"):
        TASK_TYPES.get(ttype).raw_labels(value, "train.jsonl:3", "label")


def test_multilabel_still_takes_lists() -> None:
    assert TASK_TYPES.get("multilabel").raw_labels(["a", "b"], "x", "label") == ["a", "b"]
    assert TASK_TYPES.get("classification").raw_labels(" pos ", "x", "label") == ["pos"]
