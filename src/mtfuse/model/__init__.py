"""Encoder loading, task heads, the multi-task model (one encoder, one head per task) and sharing methods."""

from mtfuse.model import seq2seq_head  # noqa: F401  (registers the seq2seq_lm head)
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
    read_sharing_spec,
)
from mtfuse.model.sharing import SHARING, SHARING_JSON, Sharing

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
    "SHARING",
    "SHARING_JSON",
    "Sharing",
    "TokenClassificationHead",
    "load_encoder",
    "load_encoder_model",
    "load_tokenizer",
    "pool",
    "read_head_specs",
    "read_sharing_spec",
    "resolve_model_path",
]
