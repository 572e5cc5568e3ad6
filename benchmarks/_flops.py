"""Model FLOPs of BERT-style encoder training and model FLOPs utilisation (MFU), for the throughput benchmarks.

MFU (Chowdhery et al. 2022, "PaLM: Scaling Language Modeling with Pathways", appendix B) is the model's FLOPs per
second, counted from the architecture, over the hardware's peak: recomputation, padding tricks or a kernel's
own overhead do not count. One token of an encoder of L layers, width H, on a sequence of S tokens, trained
(forward + backward = 3 x forward) costs ``6 N + 12 L H S`` FLOPs, N being the weights of the layers' matrix
multiplications (the attention scores and the weighted sum add ``2 x 2 S H`` per layer forwards). Embedding
lookups, layer norms, softmax and biases are not matrix multiplications and are not counted, as in PaLM. The
pooler and a classification head run once per sequence. ``tests/benchmarks/test_flops.py`` checks the count
against ``torch.utils.flop_counter.FlopCounterMode`` on a real forward and backward: equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by a substring of the device name; the
# first match wins, so the more specific names come first
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # SXM
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362.05e12),
    ("A10G", 70e12),
    ("L4", 121e12),
)


def peak_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None when it is not in ``PEAK_BF16`` (a CPU, say)."""
    for key, peak in PEAK_BF16:
        if key in device_name:
            return peak
    return None


def encoder_dims(model: Any) -> dict[str, int]:
    """What the FLOP count needs from a BERT-style model: layers, width, matmul weights per token and per
    sequence (pooler and head). ``model``: a transformers encoder or a model that holds one."""
    import torch

    cfg = model.config
    per_token = per_sequence = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            if ".layer." in f".{name}" or name.startswith("layer."):
                per_token += m.weight.numel()
            else:  # the pooler (first token only) and classification heads: once per sequence
                per_sequence += m.weight.numel()
    return {
        "layers": int(cfg.num_hidden_layers),
        "hidden": int(cfg.hidden_size),
        "per_token_weights": per_token,
        "per_sequence_weights": per_sequence,
    }


def train_flops(dims: dict[str, int], batch_sizes: Sequence[int], padded_lengths: Sequence[int]) -> float:
    """Model FLOPs of training steps on batches of ``batch_sizes[i]`` sequences padded to ``padded_lengths[i]``
    (padding positions are computed, so they count)."""
    total = 0.0
    for b, s in zip(batch_sizes, padded_lengths, strict=True):
        per_token = 6 * dims["per_token_weights"] + 12 * dims["layers"] * dims["hidden"] * s
        total += b * (s * per_token + 6 * dims["per_sequence_weights"])
    return total
