"""Encoder loading, task heads and the multi-task model (one shared encoder, one head per task)."""

from mtfuse.model.encoder import (
    DEFAULT_MODEL,
    load_encoder,
    load_encoder_model,
    load_tokenizer,
    resolve_model_path,
)
from mtfuse.model.heads import (
    HEADS,
    POOLINGS,
    ClassificationHead,
    Head,
    MultiLabelHead,
    RegressionHead,
    TokenClassificationHead,
    pool,
)
from mtfuse.model.multitask import (
    FORMAT_VERSION,
    HEADS_JSON,
    HEADS_WEIGHTS,
    HeadSpec,
    MultiTaskModel,
    read_head_specs,
)

__all__ = [
    "DEFAULT_MODEL",
    "FORMAT_VERSION",
    "HEADS",
    "HEADS_JSON",
    "HEADS_WEIGHTS",
    "POOLINGS",
    "ClassificationHead",
    "Head",
    "HeadSpec",
    "MultiLabelHead",
    "MultiTaskModel",
    "RegressionHead",
    "TokenClassificationHead",
    "load_encoder",
    "load_encoder_model",
    "load_tokenizer",
    "pool",
    "read_head_specs",
    "resolve_model_path",
]
