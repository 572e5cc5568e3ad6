"""The generation task type: target encoding and batches, the warm-started decoder head, decoding, metrics
against sacreBLEU / rouge-score directly, the readers' errors and MBR selection."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from transformers import AutoTokenizer, EncoderDecoderModel

from mtfuse.config import DataConfig, GenerationConfig, RunConfig
from mtfuse.errors import DataError
from mtfuse.evaluate import predict_encoded
from mtfuse.metrics import METRICS, task_score
from mtfuse.model import MultiTaskModel, load_encoder
from mtfuse.tasks.prepare import prepare_tasks
from mtfuse.tasks.readers import READERS
from mtfuse.tasks.types import IGNORE_INDEX, TASK_TYPES
from mtfuse.tasks.types.generation import mbr_select
from mtfuse.training.setup import head_specs

PAIRS = [
    ("good film", "guter Film"),
    ("bad plot", "schlechte Handlung"),
    ("great actor", "großer Schauspieler"),
    ("dull scene", "langweilige Szene"),
]


def _config(tmp_path: Path, model_dir: Path, generation: dict | None = None) -> RunConfig:
    rows = [{"src": s, "tgt": t} for s, t in PAIRS]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {
        "name": "mt",
        "type": "generation",
        "data": {"format": "jsonl", "path": str(tmp_path)},
        "text_fields": ["src"],
        "label_field": "tgt",
        "generation": {"max_new_tokens": 8, **(generation or {})},
    }
    return RunConfig.model_validate(
        {"tasks": [task], "model": {"name_or_path": str(model_dir)}, "cache_dir": str(tmp_path / "cache")}
    )


def _build(tmp_path: Path, model_dir: Path, generation: dict | None = None):
    cfg = _config(tmp_path, model_dir, generation)
    encoder, tok = load_encoder(str(model_dir))
    tasks = prepare_tasks(cfg, tok, ["train", "dev"])
    torch.manual_seed(0)
    model = MultiTaskModel.build(encoder, head_specs(tasks, cfg, 0.0, encoder.config, tok))
    return cfg, tasks, model, tok


def test_targets_are_shifted_right_behind_the_start_token(tmp_path: Path, tiny_model_dir: Path) -> None:
    _, tasks, _, tok = _build(tmp_path, tiny_model_dir)
    t = tasks["mt"]
    batch = t.type.collate(t.splits["train"], [0, 1], tok.pad_token_id)
    labels, dec = batch["labels"], batch["decoder_input_ids"]
    assert dec[:, 0].tolist() == [tok.cls_token_id] * 2
    for r in range(2):
        n = int((labels[r] != IGNORE_INDEX).sum())
        assert labels[r, n - 1] == tok.sep_token_id and labels[r, n:].eq(IGNORE_INDEX).all()
        assert dec[r, 1:n].tolist() == labels[r, : n - 1].tolist()  # teacher forcing: y shifted right
    assert t.gold["dev"][0] == ["guter Film"]


def test_warm_start_copies_the_encoder_and_ties_the_output_layer(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    _, _, model, _ = _build(tmp_path, tiny_model_dir)
    dec = model.heads["mt"].decoder
    enc_state = model.encoder.state_dict()
    for k, v in dec.bert.state_dict().items():
        if "crossattention" not in k:
            assert torch.equal(v, enc_state[k]), k
    assert (
        dec.cls.predictions.decoder.weight.data_ptr() == dec.bert.embeddings.word_embeddings.weight.data_ptr()
    )


def test_loss_falls_decoding_returns_text_and_the_model_round_trips(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    cfg, tasks, model, tok = _build(tmp_path, tiny_model_dir)
    t = tasks["mt"]
    batch = t.type.collate(t.splits["train"], list(range(len(PAIRS))), tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(120):
        loss = t.type.loss(model("mt", batch), batch["labels"], **model.heads["mt"].loss_kwargs())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.05 * losses[0]
    dev = torch.device("cpu")
    texts, scores = predict_encoded(model, t, t.splits["dev"], 2, dev, tok.pad_token_id)
    assert all(isinstance(x, str) for x in texts) and all(s <= 0 for s in scores)
    assert texts == [tgt.lower() for _, tgt in PAIRS]  # memorised (MiniLM's tokenizer is uncased)
    beam_task = prepare_tasks(
        _config(tmp_path, tiny_model_dir, {"num_beams": 3, "no_repeat_ngram_size": 2}), tok, ["dev"]
    )["mt"]
    beam, _ = predict_encoded(model, beam_task, beam_task.splits["dev"], 4, dev, tok.pad_token_id)
    assert all(isinstance(x, str) and x for x in beam)

    model.save(tmp_path / "model", tok)
    again, _ = MultiTaskModel.load(tmp_path / "model")
    texts2, _ = predict_encoded(again, t, t.splits["dev"], 2, dev, tok.pad_token_id)
    assert texts2 == texts
    # model/hf/mt: the BERT2BERT model as plain transformers loads it, decoding greedily as mtfuse does
    hf_dir = tmp_path / "model" / "hf" / "mt"
    plain = EncoderDecoderModel.from_pretrained(hf_dir).eval()
    plain_tok = AutoTokenizer.from_pretrained(hf_dir)
    x = plain_tok([s for s, _ in PAIRS], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = plain.generate(input_ids=x.input_ids, attention_mask=x.attention_mask, max_new_tokens=8)
    assert [s.strip() for s in plain_tok.batch_decode(out, skip_special_tokens=True)] == texts

    # model.hf_copies: false leaves the copies out (and drops those of an earlier save there); mtfuse still
    # loads the directory and decodes the same
    model.save(tmp_path / "model", tok, hf_copies=False)
    assert not (tmp_path / "model" / "hf").exists()
    again, _ = MultiTaskModel.load(tmp_path / "model")
    assert predict_encoded(again, t, t.splits["dev"], 2, dev, tok.pad_token_id)[0] == texts


def test_sampling_is_seeded(tmp_path: Path, tiny_model_dir: Path) -> None:
    _, _, model, tok = _build(tmp_path, tiny_model_dir)
    t = prepare_tasks(_config(tmp_path, tiny_model_dir, {"do_sample": True, "top_k": 20}), tok, ["dev"])["mt"]
    dev = torch.device("cpu")
    a, _ = predict_encoded(model, t, t.splits["dev"], 2, dev, tok.pad_token_id)
    b, _ = predict_encoded(model, t, t.splits["dev"], 2, dev, tok.pad_token_id)
    assert a == b


def test_each_reference_can_be_its_own_training_pair(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _config(tmp_path, tiny_model_dir, {"train_references": "each", "prefix": "translate: "})
    rows = [{"src": "a b", "tgt": ["x y", "z"]}, {"src": "c", "tgt": "w"}]
    for split in ("train", "dev"):  # in place of _config's pairs
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, tok = load_encoder(str(tiny_model_dir))
    t = prepare_tasks(cfg, tok, ["train", "dev"])["mt"]
    assert len(t.splits["train"]) == 3 and len(t.splits["dev"]) == 2  # dev keeps one example per row
    assert t.gold["dev"][0] == ["x y", "z"]
    assert tok.decode(t.splits["dev"].input_ids[0], skip_special_tokens=True).startswith("translate")


def test_an_empty_target_names_the_row(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _config(tmp_path, tiny_model_dir)
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"src": "a", "tgt": "b"}) + "\n" + '{"src": "a", "tgt": ""}\n'
    )
    (tmp_path / "dev.jsonl").write_text(json.dumps({"src": "a", "tgt": ["b", " "]}) + "\n")
    _, tok = load_encoder(str(tiny_model_dir))
    with pytest.raises(DataError, match=r"train.jsonl:2 \(field 'tgt'\): the target is empty"):
        prepare_tasks(cfg, tok, ["train"])
    with pytest.raises(DataError, match=r"dev.jsonl:1 \(field 'tgt'\): reference 1 is empty"):
        prepare_tasks(cfg, tok, ["dev"], vocabs={"mt": None})


# ------------------------------------------------------------------------------------------ metrics

HYP = ["the cat sat on the mat", "a dog runs in the park", "hello"]
REFS = [
    ["the cat sat on a mat", "a cat was sitting on the mat"],
    ["the dog is running in the park"],
    ["hello"],
]


def test_bleu_and_chrf_are_sacrebleu_with_every_reference() -> None:
    streams = [[r[0] for r in REFS], [r[1] if len(r) > 1 else None for r in REFS]]
    assert METRICS.get("bleu")(HYP, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYP, streams).score)
    assert METRICS.get("chrf")(HYP, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYP, streams).score)
    assert METRICS.get("bleu")(HYP, [r[0] for r in REFS]) == pytest.approx(
        sacrebleu.corpus_bleu(HYP, [streams[0]]).score
    )


def test_rouge_is_the_best_reference_stemmed() -> None:
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for kind in ("rouge1", "rouge2", "rougeL"):
        best = [max(sc.score(r, h)[kind].fmeasure for r in rs) for h, rs in zip(HYP, REFS, strict=True)]
        assert METRICS.get(kind)(HYP, REFS) == pytest.approx(100 * np.mean(best))


def test_distinct_and_length() -> None:
    texts = ["a b a b", "a c"]
    assert METRICS.get("distinct1")(texts, None) == pytest.approx(100 * 3 / 6)
    assert METRICS.get("distinct2")(texts, None) == pytest.approx(100 * 3 / 4)  # (a b) (b a) (a c)
    assert METRICS.get("gen_len")(texts, None) == pytest.approx(3.0)
    assert task_score({"bleu": 20.0, "chrf": 40.0, "gen_len": 9.0}) == pytest.approx(30.0)


def test_mbr_picks_the_consensus_output() -> None:
    cands = ["Katze im Haus", "ein Hund läuft im Park", "ein Hund rennt im Park", "ein Hund läuft im Park"]
    assert mbr_select(cands) == 1  # two members agree on it (ties: the earliest); the outlier never wins
    assert mbr_select(["x", "y"], [0.0, 1.0]) == 0  # the other member's weight decides


def test_the_type_refuses_metrics_that_do_not_fit() -> None:
    tt = TASK_TYPES.get("generation")
    assert tt.metric_fits("rougeL") and not tt.metric_fits("accuracy")
    assert GenerationConfig().num_beams == 1  # greedy unless the config says otherwise


# ------------------------------------------------------------------------------------------ readers


def _gz(path: Path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress("".join(x + "\n" for x in lines).encode()))


def test_parallel_reader_reads_gzip_and_names_bad_lines(tmp_path: Path) -> None:
    _gz(tmp_path / "train.en.gz", ["a dog", "a cat"])
    _gz(tmp_path / "train.de.gz", ["ein Hund", "eine Katze"])
    data = DataConfig(format="parallel", path=str(tmp_path), suffixes=[".en.gz", ".de.gz"])
    reader = READERS.get("parallel")
    rows = reader.read(data, "train")
    assert [(r["source"], r["target"]) for r in rows] == [("a dog", "ein Hund"), ("a cat", "eine Katze")]
    _gz(tmp_path / "train.de.gz", ["ein Hund"])
    with pytest.raises(DataError, match=r"train.en.gz has 2 lines but .*train.de.gz has 1"):
        reader.read(data, "train")
    _gz(tmp_path / "train.de.gz", ["ein Hund", "  "])
    with pytest.raises(DataError, match=r"train.de.gz:2: empty target segment"):
        reader.read(data, "train")


def test_dailydialog_reader_makes_context_response_pairs(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "dialogues_train.txt").write_text(
        "Hi . __eou__ Hello ! __eou__ How are you ? __eou__\n"
    )
    reader = READERS.get("dailydialog")
    rows = reader.read(DataConfig(format="dailydialog", path=str(tmp_path), context_turns=1), "train")
    assert [(r["context"], r["response"]) for r in rows] == [
        ("Hi .", "Hello !"),
        ("Hello !", "How are you ?"),
    ]
    rows = reader.read(DataConfig(format="dailydialog", path=str(tmp_path), context_turns=0), "train")
    assert rows[1]["context"] == "Hi . Hello !"
    (tmp_path / "train" / "dialogues_train.txt").write_text("Hi . __eou__ __eou__ Yes __eou__\n")
    with pytest.raises(DataError, match=r"dialogues_train.txt:1: utterance 2 of the dialogue is empty"):
        reader.read(DataConfig(format="dailydialog", path=str(tmp_path)), "train")


# ------------------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_minilm_encoder_decoder_learns_real_multi30k_lines(tmp_path: Path, shared_data_dir: Path) -> None:
    """The packaged MiniLM warm-started as BERT2BERT, a few steps on 16 real Multi30k pairs."""
    cfg = RunConfig.model_validate(
        {
            "tasks": [
                {
                    "name": "mt",
                    "type": "generation",
                    "data": {
                        "format": "parallel",
                        "path": str(shared_data_dir / "multi30k"),
                        "files": {"train": "val", "dev": "val"},
                        "suffixes": [".en.gz", ".de.gz"],
                    },
                    "max_length": 32,
                    "generation": {"max_target_length": 32, "max_new_tokens": 12},
                }
            ],
            "subset": {"train": 16, "eval": 4},
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    encoder, tok = load_encoder("default")
    tasks = prepare_tasks(cfg, tok, ["train", "dev"])
    model = MultiTaskModel.build(encoder, head_specs(tasks, cfg, 0.1, encoder.config, tok))
    t = tasks["mt"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    batch = t.type.collate(t.splits["train"], list(range(16)), tok.pad_token_id)
    losses = []
    for _ in range(8):
        loss = t.type.loss(model("mt", batch), batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    texts, _ = predict_encoded(model, t, t.splits["dev"], 4, torch.device("cpu"), tok.pad_token_id)
    assert len(texts) == 4 and all(isinstance(x, str) for x in texts) and any(texts)
