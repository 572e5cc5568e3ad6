"""Task objects built by hand for tests that exercise encoding without a config file or data on disk."""

from __future__ import annotations

from mtfuse.config import TaskConfig
from mtfuse.tasks.features import TaskData
from mtfuse.tasks.types import TASK_TYPES


def token_task(tags: list[str], max_length: int = 64) -> TaskData:
    """A token-classification task ``ner`` over JSONL rows ``{"tokens": [...], "tags": [...]}``."""
    cfg = TaskConfig(
        name="ner",
        type="token_classification",
        data={"format": "jsonl"},
        text_fields=["tokens"],
        label_field="tags",
        max_length=max_length,
    )
    return TaskData(cfg, TASK_TYPES.get("token_classification"), ["tokens"], "tags", list(tags))
