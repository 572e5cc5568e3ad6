"""Tiny random multilingual encoders with tokenizers trained in the test, offline.

- :func:`build_tiny_xlmr`: an XLM-RoBERTa (``XLMRobertaConfig``, one token type, positions offset by
  ``padding_idx + 1``) with a SentencePiece-style Unigram tokenizer (``▁`` word-start pieces, Metaspace
  pre-tokenisation, ``<s> A </s></s> B </s>``), saved as xlm-roberta-base is on the hub: an
  ``XLMRobertaForMaskedLM`` checkpoint (``roberta.*`` weights, its MLM head ``lm_head.*``, no pooler, so
  ``AutoModel`` gives every model loaded from it a new random pooler);
- :func:`build_tiny_mbert`: a BERT (``BertConfig``, two token types) with a cased WordPiece tokenizer (``##``
  continuation pieces, no lower-casing, accents kept), as multilingual BERT (cased) ships.

Both tokenizers are trained on the same few hundred lines of English and German text from the shared data
(Multi30k's two sides, RTE, CoNLL-2003), so English and German words both tokenise into a handful of pieces.
Each is saved with ``save_pretrained`` beside its model: ``AutoTokenizer`` / ``AutoModel.from_pretrained(dir)``
load them with no network, as mtfuse's ``model.name_or_path`` does.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
from tokenizers import BertWordPieceTokenizer, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaTokenizer,
)

# XLM-R's ids 0-3 (<unk> must be 3, as XLMRobertaTokenizer expects), then <mask> (4 here, the last id in XLM-R)
XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 128  # the longest input both encoders take (XLM-R: 130 positions, 2 of them before the first)
_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _gz_lines(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line, _ in zip(f, range(n), strict=False)]


def training_text(data_dir: Path, n: int = 300) -> list[str]:
    """English and German lines: ``n`` of each side of Multi30k's train split, 100 RTE pairs and the words of
    the first CoNLL-2003 sentences (so its capitals, digits and punctuation have pieces too)."""
    multi30k = data_dir / "multi30k"
    texts = _gz_lines(multi30k / "train.en.gz", n) + _gz_lines(multi30k / "train.de.gz", n)
    for line in (data_dir / "glue" / "RTE" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:101]:
        texts.extend(line.split("\t")[1:3])
    words: list[str] = []
    for line in (data_dir / "conll2003" / "train.txt").read_text(encoding="utf-8").splitlines()[:3000]:
        if line.strip() and not line.startswith("-DOCSTART-"):
            words.append(line.split()[0])
        elif words:
            texts.append(" ".join(words))
            words = []
    return texts


def _save(directory: Path, model: torch.nn.Module, tokenizer: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)  # type: ignore[attr-defined]
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def _seeded(build: object, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching other tests' RNG state
        torch.manual_seed(seed)
        return build()  # type: ignore[operator]


def build_tiny_xlmr(directory: Path, data_dir: Path, vocab_size: int = 1500, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 random XLM-RoBERTa (with its MLM head, without a pooler) and a Unigram
    (SentencePiece) tokenizer trained here."""
    unigram = Tokenizer(models.Unigram())
    # XLM-R's own pre-tokenisation: split on white space, then '▁' before every word
    unigram.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=XLMR_SPECIALS, unk_token="<unk>", max_piece_length=12
    )
    unigram.train_from_iterator(training_text(data_dir), trainer)
    pieces = [(str(p), float(s)) for p, s in json.loads(unigram.to_str())["model"]["vocab"]]
    assert [p for p, _ in pieces[:5]] == XLMR_SPECIALS
    # transformers builds XLM-R's pipeline around the pieces: Metaspace, <s> A </s></s> B </s>, no type ids
    tokenizer = XLMRobertaTokenizer(vocab=pieces)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_LENGTH + 2,  # positions start at padding_idx + 1 = 2
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **_TINY,
    )
    return _save(directory, _seeded(lambda: XLMRobertaForMaskedLM(config), seed), tokenizer)


def build_tiny_mbert(directory: Path, data_dir: Path, vocab_size: int = 1500, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 random BERT with a cased WordPiece tokenizer trained here (as mBERT cased)."""
    wordpiece = BertWordPieceTokenizer(lowercase=False, strip_accents=False, clean_text=True)
    wordpiece.train_from_iterator(
        training_text(data_dir), vocab_size=vocab_size, special_tokens=BERT_SPECIALS, limit_alphabet=400
    )
    tokenizer = BertTokenizer(vocab=wordpiece.get_vocab(), do_lower_case=False, strip_accents=False)
    config = BertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_LENGTH,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
        **_TINY,
    )
    return _save(directory, _seeded(lambda: BertModel(config), seed), tokenizer)
