"""Sharing architectures: which encoder parameters each task uses. Chosen by ``model.sharing.method``.

- ``hard`` (default): one encoder for all tasks, one head per task.
- ``soft``: per-task copies of chosen encoder layers, l2-pulled towards the shared layer (``extra_loss``).
- ``adapters``: one peft adapter (LoRA or IA3) per task over a frozen or trained shared encoder.
- ``mmoe``: experts over the encoder output with a softmax gate per task (MMoE; per-task experts: CGC).

Hierarchical sharing is not a method: any head can read a chosen encoder layer (``HeadSpec.layer``, the task's
``layer`` in the config), under every method.
"""

from mtfuse.model.sharing.base import (  # noqa: I001  (the base first, then the methods that use it)
    SHARING,
    SHARING_JSON,
    SHARING_WEIGHTS,
    Sharing,
    build_sharing,
    encoder_layers,
    sharing_spec,
)
from mtfuse.model.sharing import adapters, hard, mmoe, soft  # noqa: F401  (register the methods)

__all__ = [
    "SHARING",
    "SHARING_JSON",
    "SHARING_WEIGHTS",
    "Sharing",
    "build_sharing",
    "encoder_layers",
    "sharing_spec",
]
