"""Tiny random encoder-decoder checkpoints with tokenizers trained in the test, offline.

- :func:`build_tiny_t5`: a T5 (``T5Config``: relative positions, tied embeddings, ``decoder_start_token_id`` =
  the padding id 0) with a SentencePiece-style Unigram tokenizer (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no
  BOS, ``</s>`` after every text), saved as ``T5ForConditionalGeneration``, as t5-small is on the hub;
- :func:`build_tiny_bart`: a BART (``BartConfig``: learned positions, tied embeddings, decoder start ``</s>``,
  forced ``</s>`` at the end) with a byte-level BPE tokenizer (``<s> text </s>``), saved as
  ``BartForConditionalGeneration``.

The tokenizers are trained on the English / German lines ``tests.helpers.multilingual`` uses; each checkpoint
folder (``config.json``, ``generation_config.json``, ``model.safetensors``, tokenizer files) loads with
``AutoModelForSeq2SeqLM`` / ``AutoTokenizer.from_pretrained(dir)`` with no network.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BartTokenizer,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

from tests.helpers.multilingual import _save, _seeded, training_text

T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
BART_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_tiny_t5(directory: Path, data_dir: Path, vocab_size: int = 800, seed: int = 0) -> Path:
    """A 2-layer (each side), d_model-32 random T5 and a Unigram tokenizer trained here."""
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=T5_SPECIALS, unk_token="<unk>", max_piece_length=12
    )
    unigram.train_from_iterator(training_text(data_dir, 200), trainer)
    pieces = [(str(p), float(s)) for p, s in json.loads(unigram.to_str())["model"]["vocab"]]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return _save(directory, _seeded(lambda: T5ForConditionalGeneration(config), seed), tokenizer)


def _bpe_tokenizer(data_dir: Path, vocab_size: int) -> BartTokenizer:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(training_text(data_dir, 200), vocab_size=vocab_size, special_tokens=BART_SPECIALS)
    raw = json.loads(bpe._tokenizer.to_str())["model"]["merges"]  # pairs, or "a b" strings (older tokenizers)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in raw]
    return BartTokenizer(vocab=bpe.get_vocab(), merges=merges)


def _bart_like(tokenizer: BartTokenizer, **extra: object) -> dict[str, object]:
    """The sizes and special ids shared by the BART-family configs (BART, mBART, Marian, Pegasus)."""
    return {
        "vocab_size": len(tokenizer),
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 128,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "forced_eos_token_id": tokenizer.eos_token_id,
        **extra,
    }


def build_tiny_bart(directory: Path, data_dir: Path, vocab_size: int = 800, seed: int = 0) -> Path:
    """A 2-layer (each side), d_model-32 random BART and a byte-level BPE tokenizer trained here."""
    tokenizer = _bpe_tokenizer(data_dir, vocab_size)
    config = BartConfig(
        **_bart_like(
            tokenizer, bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.eos_token_id
        )
    )
    return _save(directory, _seeded(lambda: BartForConditionalGeneration(config), seed), tokenizer)


def build_tiny_other(
    kind: str, directory: Path, data_dir: Path, vocab_size: int = 800, seed: int = 0
) -> Path:
    """A tiny random mBART, Marian or Pegasus (their own model classes: mBART's decoder inputs wrap the last
    token to the front, Marian and Pegasus start decoding from the padding id and use sinusoidal positions),
    with the byte-level BPE tokenizer trained here (the architecture is what is under test, not the
    checkpoints' SentencePiece vocabularies)."""
    from transformers import (
        MarianConfig,
        MarianMTModel,
        MBartConfig,
        MBartForConditionalGeneration,
        PegasusConfig,
        PegasusForConditionalGeneration,
    )

    tokenizer = _bpe_tokenizer(data_dir, vocab_size)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if kind == "mbart":
        # mBART-50's checkpoints start decoding from </s>; their decoder inputs wrap the last token (</s>) around
        config: object = MBartConfig(
            **_bart_like(tokenizer, bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=eos)
        )
        make: object = MBartForConditionalGeneration
    elif kind == "marian":
        config = MarianConfig(
            **_bart_like(tokenizer, decoder_start_token_id=pad, decoder_vocab_size=len(tokenizer))
        )
        make = MarianMTModel
    elif kind == "pegasus":
        config = PegasusConfig(**_bart_like(tokenizer, decoder_start_token_id=pad))
        make = PegasusForConditionalGeneration
    else:
        raise ValueError(kind)
    return _save(directory, _seeded(lambda: make(config), seed), tokenizer)  # type: ignore[operator]
