"""benchmarks/_flops.py: the model-FLOP count of BERT training (6 N + 12 L H S per token, PaLM's MFU
convention) against torch's own FLOP counter on a real forward and backward, and the peak table."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def flops():
    yield from load_script("_flops.py")


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize(("batch", "length"), [(3, 16), (2, 40)])
def test_train_flops_match_torchs_flop_counter(flops, batch: int, length: int, attention: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        num_labels=3, attn_implementation=attention,
    )  # fmt: skip
    model = BertForSequenceClassification(cfg)
    ids = torch.randint(0, 100, (batch, length))
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(input_ids=ids, labels=torch.zeros(batch, dtype=torch.long))
        out.loss.backward()
    dims = flops.encoder_dims(model)
    assert dims["layers"] == 3 and dims["hidden"] == 32
    assert dims["per_token_weights"] == 3 * (4 * 32 * 32 + 2 * 32 * 64)
    assert dims["per_sequence_weights"] == 32 * 32 + 32 * 3  # pooler + classifier
    # every matrix multiplication of the forward and backward, exactly
    assert flops.train_flops(dims, [batch], [length]) == counter.get_total_flops()


def test_peak_flops_by_device_name(flops) -> None:
    assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert flops.peak_flops("NVIDIA H200") == 989.4e12
    assert flops.peak_flops("cpu") is None
