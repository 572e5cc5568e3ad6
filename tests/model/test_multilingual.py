"""Multilingual encoders (issue 13, section 3): a tiny random XLM-RoBERTa with a SentencePiece (Unigram)
tokenizer and a tiny random multilingual BERT with a cased WordPiece tokenizer, both trained offline in the test
on English and German text (``tests.helpers.multilingual``).

- tokenisation: word tags land on each word's first SentencePiece / WordPiece piece only, one labelled position
  per word within ``max_length``; XLM-R's pair inputs carry no token type ids (it has one token type);
- ``configs/multilingual.yaml`` in miniature on each encoder: an English pair task (RTE), English NER (CoNLL-2003)
  and masked language modelling on Multi30k's German side, then ``evaluate`` and ``predict`` (one tag per word,
  German words filled in for ``<mask>`` / ``[MASK]``);
- the tiny XLM-R is saved as xlm-roberta-base is on the hub (``XLMRobertaForMaskedLM``: ``lm_head.*``, no
  pooler): a masked_lm task starts from its MLM head, and runs fine-tuned from it merge although the base has
  no pooler (each run's pooler is new at load; those tensors are merged as the runs' mean);
- merging: two single-task XLM-R runs from the same base merge (task arithmetic, TIES, AdaMerging) into one
  model that evaluates and predicts both tasks; an XLM-R run and an mBERT run are refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, XLMRobertaForMaskedLM

from mtfuse import config as config_mod
from mtfuse.model import HeadSpec, MultiTaskModel, load_encoder
from mtfuse.tasks.features import Tokenizing, collate, encode_rows
from mtfuse.tasks.prepare import prepare_tasks
from mtfuse.tasks.types import IGNORE_INDEX, TASK_TYPES
from mtfuse.training.setup import head_specs
from tests.helpers.cli import fails, run_cli
from tests.helpers.tasks import token_task

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "multilingual.yaml"
TAGS = ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER", "O"]
# words of several pieces with both tokenizers ("rejects", "boycott", German compounds), one that mBERT's small
# vocabulary has no pieces for ([UNK]) and a lone full stop (XLM-R: the pieces '▁' and '.')
WORDS = "EU rejects German call to boycott Reykjavík : Zwei Straßenmusiker auf dem Bürgersteig .".split()
GOLD = ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-LOC", "O", "O", "O", "O", "O", "O", "O"]
SMALL = [
    "subset.train=24",
    "subset.eval=12",
    "train.max_steps=3",
    "train.batch_size=8",
    "train.lr=1e-3",
    "train.progress=false",
    "train.tensorboard=false",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def encoders(tiny_xlmr_dir: Path, tiny_mbert_dir: Path) -> dict[str, Path]:
    return {"xlmr": tiny_xlmr_dir, "mbert": tiny_mbert_dir}


def ok(*argv: object) -> str:
    code, out, err = run_cli(list(argv))
    assert code == 0, f"mtfuse {' '.join(map(str, argv))}: exit {code}\n{out}\n{err}"
    assert "Traceback" not in err
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _first_pieces(word_ids: np.ndarray) -> list[int]:
    return [i for i, w in enumerate(word_ids) if w >= 0 and (i == 0 or w != word_ids[i - 1])]


# ------------------------------------------------------------------------------------------ tokenisation


def test_the_tokenizers_are_sentencepiece_and_wordpiece(encoders: dict[str, Path]) -> None:
    """What the helper built is what XLM-R and mBERT ship: loaded offline by the Auto classes and by mtfuse."""
    xlmr, mbert = (AutoTokenizer.from_pretrained(str(encoders[k])) for k in ("xlmr", "mbert"))
    assert json.loads(xlmr.backend_tokenizer.to_str())["model"]["type"] == "Unigram"
    assert json.loads(mbert.backend_tokenizer.to_str())["model"]["type"] == "WordPiece"
    assert xlmr.convert_ids_to_tokens(xlmr("Zwei Männer")["input_ids"])[:2] == ["<s>", "▁Zwei"]
    assert mbert.tokenize("Männer Straße") == ["Männer", "Straße"]  # cased, accents kept
    for name, path in encoders.items():
        encoder, tok = load_encoder(str(path))
        assert tok.is_fast and len(tok) == encoder.config.vocab_size <= 2000, name
        assert type(encoder).__name__ == ("XLMRobertaModel" if name == "xlmr" else "BertModel")
        assert AutoModel.from_pretrained(str(path)).config.hidden_size == 32
    with safe_open(str(encoders["xlmr"] / "model.safetensors"), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118 (a safetensors handle is not a dict)
    assert "lm_head.dense.weight" in keys and "roberta.embeddings.word_embeddings.weight" in keys
    assert not any("pooler" in k for k in keys)  # as xlm-roberta-base: AutoModel makes a new pooler


@pytest.mark.parametrize("name", ["xlmr", "mbert"])
def test_word_tags_land_on_the_first_piece_of_each_word(encoders: dict[str, Path], name: str) -> None:
    tok = AutoTokenizer.from_pretrained(str(encoders[name]))
    rows = [{"tokens": WORDS, "tags": GOLD, "_where": "ner.jsonl:1"}]
    enc, gold = encode_rows(rows, token_task(TAGS), "dev", Tokenizing(tok, None))
    wids, labels, ids = enc.word_ids[0], enc.labels[0], enc.input_ids[0]
    pieces = tok.convert_ids_to_tokens(ids.tolist())
    firsts = _first_pieces(wids)
    assert sum(np.bincount(wids[wids >= 0]) > 1) >= 4  # several words are split into several pieces
    assert [int(wids[i]) for i in firsts] == list(range(len(WORDS)))  # one first piece per word, in order
    assert [TAGS[labels[i]] for i in firsts] == GOLD  # carrying that word's own tag
    assert all(labels[i] == IGNORE_INDEX for i in range(len(labels)) if i not in firsts)
    assert int((labels != IGNORE_INDEX).sum()) == len(WORDS)
    assert gold == [GOLD] and enc.n_words == [len(WORDS)]
    # the boundaries are the tokenizers' own: a word starts at SentencePiece's '▁', WordPiece has '##' inside
    inner = [i for i in range(len(pieces)) if wids[i] >= 0 and i not in firsts]
    if name == "xlmr":
        assert all(pieces[i].startswith("▁") for i in firsts)
        assert not any(pieces[i].startswith("▁") for i in inner)
        assert pieces[firsts[-1] : firsts[-1] + 2] == ["▁", "."]  # a piece of its own begins the word
    else:
        assert not any(pieces[i].startswith("##") for i in firsts if pieces[i] != tok.unk_token)
        assert all(pieces[i].startswith("##") for i in inner)


@pytest.mark.parametrize("name", ["xlmr", "mbert"])
def test_words_past_max_length_are_not_labelled(encoders: dict[str, Path], name: str) -> None:
    tok = AutoTokenizer.from_pretrained(str(encoders[name]))
    rows = [{"tokens": WORDS, "tags": GOLD, "_where": "ner.jsonl:1"}]
    enc, _ = encode_rows(rows, token_task(TAGS, max_length=10), "dev", Tokenizing(tok, None))
    wids, labels = enc.word_ids[0], enc.labels[0]
    seen = sorted(set(wids.tolist()) - {-1})
    assert len(enc.input_ids[0]) == 10 and seen == list(range(len(seen))) and 0 < len(seen) < len(WORDS)
    assert int((labels != IGNORE_INDEX).sum()) == len(seen)  # each word within max_length, once
    assert [TAGS[labels[i]] for i in _first_pieces(wids)] == GOLD[: len(seen)]
    assert enc.n_words == [len(WORDS)]  # the cut words still count (scored as 'O')


def test_xlmr_pairs_feed_no_token_type_ids(encoders: dict[str, Path]) -> None:
    """XLM-R has one token type (an embedding of size 1): a pair input must not give segment B type id 1.
    Its tokenizer gives no type ids, so the batch has none and the encoder uses its zeros; mBERT's pairs do
    mark segment B."""
    pairs = [("A man sleeps.", "Ein Mann schläft."), ("Two dogs run in the snow.", "Hunde laufen.")]
    for name, path in encoders.items():
        encoder, tok = load_encoder(str(path))
        enc = Tokenizing(tok, None).encode(pairs, False, 64)
        batch = collate(enc, [0, 1], tok.pad_token_id, TASK_TYPES.get("pair_classification"))
        if name == "xlmr":
            assert encoder.config.type_vocab_size == 1
            assert enc.token_type_ids is None and "token_type_ids" not in batch
            pieces = tok.convert_ids_to_tokens(enc.input_ids[0].tolist())
            assert pieces[0] == "<s>" and pieces.count("</s>") == 3  # <s> a </s></s> b </s>
        else:
            assert encoder.config.type_vocab_size == 2 and int(batch["token_type_ids"].max()) == 1
        spec = HeadSpec("rte", "pair_classification", "classification", 2, "cls", 0.0, ["a", "b"])
        model = MultiTaskModel.build(encoder, {"rte": spec}).eval()
        with torch.no_grad():
            logits = model("rte", batch)
        assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_masked_lm_starts_from_xlmr_s_own_mlm_head(encoders: dict[str, Path], shared_data_dir: Path) -> None:
    """XLM-R's MLM head is ``lm_head.*`` (RoBERTa's names), not BERT's ``cls.predictions.*``: the masked_lm
    head loads it, and scores the masked positions as XLMRobertaForMaskedLM does."""
    path = encoders["xlmr"]
    cfg = config_mod.load(
        CONFIG, [f"data_dir={shared_data_dir}", f"model.name_or_path={path}", "only_tasks=[de_mlm]"]
    )
    cfg.subset.train = cfg.subset.eval = 8
    encoder, tok = load_encoder(str(path))
    task = prepare_tasks(cfg, tok, ["train", "dev"])["de_mlm"]
    model = MultiTaskModel.build(encoder, head_specs({"de_mlm": task}, cfg, 0.0, encoder.config, tok)).eval()
    theirs = XLMRobertaForMaskedLM.from_pretrained(str(path)).eval()
    head, lm_head = model.heads["de_mlm"], theirs.lm_head
    assert torch.equal(head.transform.dense.weight, lm_head.dense.weight)
    assert torch.equal(head.transform.LayerNorm.weight, lm_head.layer_norm.weight)
    assert torch.equal(head.bias, lm_head.bias)
    assert head.decoder.weight is model.encoder.get_input_embeddings().weight
    batch = collate(task.splits["dev"], list(range(8)), tok.pad_token_id, task.type)
    assert "token_type_ids" not in batch and int(batch["mlm_mask"].sum()) > 0
    with torch.no_grad():
        ours = model("de_mlm", batch)
        ref = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(ours, ref[batch["mlm_mask"]], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------- configs/multilingual.yaml in miniature


def _common(model_dir: Path, shared_data_dir: Path, cache: Path) -> list[str]:
    return [f"model.name_or_path={model_dir}", f"data_dir={shared_data_dir}", f"cache_dir={cache}", *SMALL]


@pytest.fixture(scope="module")
def mt_runs(
    encoders: dict[str, Path], shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The shipped multilingual config (RTE + CoNLL + German MLM) trained a few steps on each encoder."""
    root = tmp_path_factory.mktemp("multilingual_runs")
    out = {}
    for name, path in encoders.items():
        ok("train", CONFIG, *_common(path, shared_data_dir, root / "cache"), "--output", root / name)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["xlmr", "mbert"])
def test_multilingual_config_trains_evaluates_and_predicts(
    mt_runs: dict[str, Path], name: str, tmp_path: Path
) -> None:
    run = mt_runs[name]
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 3 and results["kind"] == "multi-task"
    metrics = json.loads((run / "metrics.json").read_text())["tasks"]
    assert set(metrics) == {"rte", "conll", "de_mlm"}
    assert set(metrics["de_mlm"]) == {"perplexity", "mlm_loss"}
    # a random tiny model is no better than chance over a vocabulary of 1,500 pieces
    assert 100 < metrics["de_mlm"]["perplexity"] < 10_000
    assert metrics["de_mlm"]["perplexity"] == pytest.approx(math.exp(metrics["de_mlm"]["mlm_loss"]), rel=1e-3)
    assert all(math.isfinite(v) for m in metrics.values() for v in m.values())
    assert len(read_jsonl(run / "predictions" / "conll.jsonl")) == 12

    ok("evaluate", run, "--split", "dev", "subset.eval=12", "only_tasks=[conll,de_mlm]")
    evaluated = json.loads((run / "metrics-dev.json").read_text())["tasks"]
    assert evaluated["conll"] == pytest.approx(metrics["conll"], abs=1e-6)  # the training run's dev subset
    assert evaluated["de_mlm"] == pytest.approx(metrics["de_mlm"], rel=1e-5)

    sentences = [WORDS, "Ein Mann mit einem Hut spielt Gitarre in Köln .".split()]
    src = tmp_path / "ner.jsonl"
    src.write_text("".join(json.dumps({"tokens": s}) + "\n" for s in sentences), encoding="utf-8")
    ok("predict", run, "--task", "conll", "--input", src, "--output", tmp_path / "tags.jsonl")
    recs = read_jsonl(tmp_path / "tags.jsonl")
    heads = json.loads((run / "model" / "heads.json").read_text())["heads"]
    tag_set = set(next(h for h in heads if h["task"] == "conll")["labels"])
    for rec, words in zip(recs, sentences, strict=True):
        assert rec["tokens"] == words and len(rec["tags"]) == len(words) and len(rec["probs"]) == len(words)
        assert set(rec["tags"]) <= tag_set

    mask = AutoTokenizer.from_pretrained(str(run / "model")).mask_token
    src = tmp_path / "de.jsonl"
    src.write_text(json.dumps({"source": f"Ein Mann {mask} auf der Straße."}) + "\n", encoding="utf-8")
    ok("predict", run, "--task", "de_mlm", "--input", src, "--output", tmp_path / "filled.jsonl")
    (filled,) = read_jsonl(tmp_path / "filled.jsonl")
    assert len(filled["positions"]) == 1 and len(filled["predicted"]) == 1 and mask not in filled["text"]


# --------------------------------------------------------------------------------------------- merging


@pytest.fixture(scope="module")
def single_runs(
    encoders: dict[str, Path], shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Single-task runs: RTE and CoNLL on the same tiny XLM-R base (other seeds: other new poolers); CoNLL on
    the tiny mBERT."""
    root = tmp_path_factory.mktemp("multilingual_singles")
    out = {}
    for name, encoder, task, seed in (
        ("rte", "xlmr", "rte", 1),
        ("conll", "xlmr", "conll", 2),
        ("mbert", "mbert", "conll", 1),
    ):
        common = _common(encoders[encoder], shared_data_dir, root / "cache")
        ok("train", CONFIG, *common, f"only_tasks=[{task}]", f"train.seed={seed}", "--output", root / name)
        out[name] = root / name
    return out


@pytest.mark.parametrize(
    "method",
    [["task_arithmetic"], ["ties"], ["adamerging", "steps=2", "examples=8", "batch_size=4"]],
    ids=lambda m: m[0],
)
def test_xlmr_runs_merge_into_one_model(
    single_runs: dict[str, Path], encoders: dict[str, Path], method: list[str], tmp_path: Path
) -> None:
    merged, runs = tmp_path / "merged", (single_runs["rte"], single_runs["conll"])
    ok("merge", *runs, "--method", *method, "--output", merged)
    record = json.loads((merged / "merge.json").read_text())
    assert record["base"] == str(encoders["xlmr"])
    # the base has no pooler (each run started from a new one): the runs' mean; every other tensor merged
    pooler = ["pooler.dense.bias", "pooler.dense.weight"]
    assert record["no_base"] == {"tensors": pooler, "merged_as": "the inputs' mean"}
    a, b, got = (load_file(str(d / "model" / "model.safetensors")) for d in (*runs, merged))
    assert not torch.equal(a["pooler.dense.weight"], b["pooler.dense.weight"])  # (the biases start at 0)
    for k in pooler:
        torch.testing.assert_close(got[k], (a[k] + b[k]) / 2)
    moved = [
        k for k in got if k not in pooler and got[k].is_floating_point() and not torch.equal(got[k], a[k])
    ]
    assert len(moved) > len(got) // 2
    assert set(json.loads((merged / "metrics.json").read_text())["tasks"]) == {"rte", "conll"}
    assert AutoModel.from_pretrained(str(merged / "model")).config.model_type == "xlm-roberta"

    ok("evaluate", merged, "--split", "dev", "subset.eval=8")
    assert set(json.loads((merged / "metrics-dev.json").read_text())["tasks"]) == {"rte", "conll"}
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"tokens": WORDS}) + "\n", encoding="utf-8")
    ok("predict", merged, "--task", "conll", "--input", src, "--output", tmp_path / "tags.jsonl")
    (rec,) = read_jsonl(tmp_path / "tags.jsonl")
    assert len(rec["tags"]) == len(WORDS)
    pair = {"sentence1": "Zwei Hunde spielen im Schnee.", "sentence2": "Two dogs play."}
    src.write_text(json.dumps(pair) + "\n", encoding="utf-8")
    ok("predict", merged, "--task", "rte", "--input", src, "--output", tmp_path / "rte.jsonl")
    (rec,) = read_jsonl(tmp_path / "rte.jsonl")
    assert set(rec["probs"]) == {"entailment", "not_entailment"}


def test_an_xlmr_run_and_an_mbert_run_do_not_merge(
    single_runs: dict[str, Path], encoders: dict[str, Path], tmp_path: Path
) -> None:
    runs = [single_runs["rte"], single_runs["mbert"]]
    fails(["merge", *runs, "--method", "linear", "-o", tmp_path / "a"], "trained from different base models")
    fails(
        ["merge", *runs, "--method", "task_arithmetic", "--base", encoders["xlmr"], "-o", tmp_path / "b"],
        "encoder config 'model_type' is 'bert'",
        "only models of the same architecture can be merged",
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
