"""Joint intent detection + slot filling: the head's packed output, the joint loss, the metrics (hand-checked),
the unseen-label policy, the atis reader's errors, predict records and an ensemble, with the tiny random model;
and (slow) the real MiniLM on an ATIS slice beside SST-2 in both step modes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtfuse.config import DataConfig, TaskConfig
from mtfuse.errors import ConfigError, DataError
from mtfuse.fusion.ensemble.members import make_records, stack_outputs
from mtfuse.metrics import METRICS
from mtfuse.model import MultiTaskModel
from mtfuse.model.heads import build_head
from mtfuse.model.multitask import HeadSpec
from mtfuse.tasks.features import TaskData, Tokenizing, encode_rows
from mtfuse.tasks.readers import READERS
from mtfuse.tasks.types import IGNORE_INDEX, TASK_TYPES
from tests.helpers.cli import run_cli

IS = TASK_TYPES.get("intent_slots")
ATIS = Path(__file__).parents[2].parent / "shared" / "data" / "atis"
needs_atis = pytest.mark.skipif(not ATIS.is_dir(), reason="no ../shared/data/atis")

ROWS = [
    {"tokens": ["flights", "to", "boston"], "label": {"intent": "flight", "slots": ["O", "O", "B-city"]}},
    {"tokens": ["fares", "to", "new", "york"], "label": {"intent": "fare", "slots": "O O B-city I-city"}},
    {"tokens": ["flights", "and", "fares"], "label": {"intent": "fare#flight", "slots": ["O", "O", "O"]}},
]


def _rows(rows: list[dict], name: str = "train.jsonl") -> list[dict]:
    return [{**r, "_where": f"{name}:{i + 1}"} for i, r in enumerate(rows)]


def _task(labels: list[str] | None, **options: object) -> TaskData:
    tc = TaskConfig(
        name="atis",
        type="intent_slots",
        data={"format": "jsonl", "files": {"train": "x"}},
        intent_slots=options or None,
    )
    return TaskData(tc, IS, ["tokens"], "label", labels)


VOCAB = IS.vocab(_rows(ROWS), "label", None)


def test_vocabulary_is_intents_then_slots_with_unseen_classes() -> None:
    assert VOCAB == [
        "intent:<unseen>",
        "intent:fare",
        "intent:fare#flight",  # a '#' combination is a class of its own
        "intent:flight",
        "slot:B-<unseen>",
        "slot:B-city",
        "slot:I-<unseen>",
        "slot:I-city",
        "slot:O",
    ]
    with pytest.raises(DataError, match=r"row \(field 'label'\): expected \{\"intent\""):
        IS.raw_labels("flight", "row", "label")
    with pytest.raises(ConfigError, match="neither 'intent:<name>' nor 'slot:<tag>'"):
        IS.vocab([], "label", ["flight"])


def _spec(labels: list[str]) -> SimpleNamespace:
    return SimpleNamespace(
        head="intent_slots", num_outputs=len(labels), pooling="cls", dropout=0.0, labels=labels
    )


def test_head_packs_intent_at_position_0_and_masks_the_other_block() -> None:
    torch.manual_seed(0)
    head = build_head(_spec(VOCAB), hidden_size=8)
    hidden = torch.randn(2, 5, 8)
    with torch.no_grad():
        out = head(hidden, torch.ones(2, 5, dtype=torch.long), None)
    assert tuple(out.shape) == (2, 5, len(VOCAB))
    torch.testing.assert_close(out[:, 0, 1:4], head.classifier(hidden[:, 0])[:, 1:])  # cls pooling
    torch.testing.assert_close(out[:, 3, [5, 7, 8]], head.slot_classifier(hidden[:, 3])[:, [1, 3, 4]])
    p = torch.softmax(out, dim=-1)
    assert float(p[:, 0, 4:].sum()) == 0.0 and float(p[:, 1:, :4].sum()) == 0.0  # each row in its block
    assert float(p[..., [0, 4, 6]].sum()) == 0.0  # the unseen classes are never predicted
    with pytest.raises(ConfigError, match="label list"):
        build_head(SimpleNamespace(**{**vars(_spec(VOCAB)), "labels": None}), hidden_size=8)


def test_joint_loss_is_intent_ce_plus_weighted_slot_ce() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 4, len(VOCAB))
    labels = torch.tensor([[3, IGNORE_INDEX, 8, 5], [1, 8, IGNORE_INDEX, IGNORE_INDEX]])
    intent = F.cross_entropy(logits[:, 0], labels[:, 0])
    slot_terms = [
        F.cross_entropy(logits[b, t][None], labels[b, t][None]) for b, t in ((0, 2), (0, 3), (1, 1))
    ]
    want = intent + 0.5 * torch.stack(slot_terms).mean()
    torch.testing.assert_close(IS.loss(logits, labels, slot_weight=0.5), want)
    assert IS.loss_options(_task(VOCAB, slot_weight=0.5).cfg) == {"slot_weight": 0.5}
    # no labelled slot (every word's tag unseen in train): the slot term is 0, not NaN
    none = torch.tensor([[3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    torch.testing.assert_close(IS.loss(logits[:1], none), F.cross_entropy(logits[:1, 0], none[:, 0]))


def test_metrics_by_hand() -> None:
    gold = [
        ["flight", "O", "B-city", "I-city"],
        ["fare", "B-city", "O", "O"],
        ["flight", "O", "O", "B-day"],
        ["fare", "O", "O", "O"],
    ]
    pred = [
        ["flight", "O", "B-city", "I-city"],  # all right
        ["flight", "B-city", "O", "O"],  # intent wrong, slots right
        ["flight", "O", "O", "O"],  # a missed entity
        ["fare", "O", "B-day", "O"],  # a spurious entity
    ]
    assert METRICS.get("intent_accuracy")(pred, gold) == pytest.approx(75.0)
    # entities: gold 3 (city, city, day), predicted 3 (city, city, day in the wrong place), 2 right
    assert METRICS.get("slot_f1")(pred, gold) == pytest.approx(100 * 2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert METRICS.get("frame_accuracy")(pred, gold) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="differ in number or length"):
        METRICS.get("frame_accuracy")([["a", "O"]], [["a"]])


def test_plan_keeps_the_options_on_their_type() -> None:
    from mtfuse.config import from_dict

    task = {"name": "t", "type": "classification", "data": {"format": "jsonl", "files": {"train": "x"}}}
    with pytest.raises(ConfigError, match="tasks.t.intent_slots: applies to tasks of type 'intent_slots'"):
        from_dict({"tasks": [{**task, "intent_slots": {"slot_weight": 2}}]})
    with pytest.raises(ConfigError, match="unseen_labels"):
        from_dict({"tasks": [{**task, "type": "intent_slots", "intent_slots": {"unseen_labels": "drop"}}]})


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_encoding_puts_the_intent_at_position_0(tok, tmp_path: Path) -> None:
    task = _task(VOCAB)
    enc, gold = encode_rows(_rows(ROWS), task, "train", Tokenizing(tok, tmp_path / "cache"))
    assert gold[1] == ["intent:fare", "slot:O", "slot:O", "slot:B-city", "slot:I-city"]
    y, wid = enc.labels[1], enc.word_ids[1]
    assert wid[0] == -1 and y[0] == VOCAB.index("intent:fare")
    firsts = [i for i in range(1, len(wid)) if wid[i] >= 0 and wid[i] != wid[i - 1]]
    assert [VOCAB[j] for j in y[firsts]] == gold[1][1:]
    assert all(y[i] == IGNORE_INDEX for i in range(1, len(y)) if i not in firsts)

    bad = _rows([{"tokens": ["a", "b"], "label": {"intent": "fare", "slots": ["O"]}}], "dev.jsonl")
    with pytest.raises(DataError, match=r"dev\.jsonl:1: 2 words but 1 slot tags"):
        encode_rows(bad, task, "dev", Tokenizing(tok, None))


def test_unseen_labels_count_as_errors_and_keep_every_example(tok) -> None:
    dev = _rows(
        [
            {"tokens": ["fares", "on", "monday"], "label": {"intent": "day_name", "slots": "O O B-day"}},
            {"tokens": ["to", "new", "york"], "label": {"intent": "flight", "slots": "O B-city I-state"}},
        ],
        "dev.jsonl",
    )
    task = _task(VOCAB)
    enc, gold = encode_rows(dev, task, "dev", Tokenizing(tok, None))
    assert len(enc) == 2 and gold[0][0] == "intent:day_name"  # kept as written (data check counts it)
    assert enc.labels[0][0] == IGNORE_INDEX  # never a training target
    # a model that gets everything it can right: the unseen intent and tags still count as wrong
    best = [
        np.array([VOCAB.index(x) for x in ["intent:fare", "slot:O", "slot:O", "slot:O"]]),
        np.array([VOCAB.index(x) for x in ["intent:flight", "slot:O", "slot:B-city", "slot:O"]]),
    ]
    scores = IS.score(task, best, gold)
    assert scores["intent_accuracy"] == 50.0 and scores["frame_accuracy"] == 0.0
    # gold entities: <unseen> (B-day), city (new), <unseen> (york: I-state); predicted: city (new), right:
    # precision 1, recall 1/3
    assert scores["slot_f1"] == pytest.approx(50.0)
    # the fused path (gold read back from records) scores the same
    recs_gold = [IS.gold_record(g, VOCAB) for g in gold]
    y = np.concatenate([IS.targets(g, VOCAB, 4, "rec") for g in recs_gold])
    d = np.concatenate(best)
    p, g = IS.metric_inputs(d, y, np.repeat([0, 1], 4), VOCAB)
    assert {m: METRICS.get(m)(p, g) for m in IS.default_metrics} == pytest.approx(scores)

    with pytest.raises(
        DataError, match=r"dev\.jsonl:1 \(field 'label'\): label 'intent:day_name' in split 'dev'"
    ):
        encode_rows(dev, _task(VOCAB, unseen_labels="error"), "dev", Tokenizing(tok, None))


def _write_atis(root: Path, split: str, seq_in: str, seq_out: str, label: str) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    for name, text in (("seq.in", seq_in), ("seq.out", seq_out), ("label", label)):
        (root / split / name).write_text(text, encoding="utf-8")


def test_atis_reader_and_its_errors(tmp_path: Path) -> None:
    reader = READERS.get("atis")
    _write_atis(tmp_path, "train", "flights to boston\nfares\n", "O O B-city\nO\n", "flight\nfare\n")
    _write_atis(tmp_path, "valid", "to boston\n", "O B-city\n", "flight\n")
    data = DataConfig(format="atis", path=str(tmp_path))
    assert reader.splits(data) == ["train", "dev"] and reader.defaults(data) == (["tokens"], "label")
    rows = reader.read(data, "train")
    assert rows[0]["tokens"] == ["flights", "to", "boston"]
    assert rows[0]["label"] == {"intent": "flight", "slots": ["O", "O", "B-city"]}
    assert rows[1]["_where"] == f"{tmp_path / 'train' / 'seq.in'}:2"

    _write_atis(tmp_path, "test", "a b\nc d\n", "O O\nO\n", "x\ny\n")
    with pytest.raises(DataError, match=r"test/seq\.out:2: 1 slot tags, but line 2 of .*seq\.in has 2 words"):
        reader.read(data, "test")
    _write_atis(tmp_path, "test", "a b\nc d\n", "O O\nO O\n", "x\n")
    with pytest.raises(DataError, match=r"test/label: 1 lines, but .*test/seq\.in has 2"):
        reader.read(data, "test")
    _write_atis(tmp_path, "test", "a b\n\n", "O O\n\n", "x\ny\n")
    with pytest.raises(DataError, match=r"test/seq\.in:2: blank line"):
        reader.read(data, "test")
    with pytest.raises(ConfigError, match="needs data.path"):
        reader.splits(DataConfig(format="atis"))


def _model(tiny_model_dir: Path, labels: list[str]) -> MultiTaskModel:
    from transformers import AutoModel

    torch.manual_seed(0)
    enc = AutoModel.from_pretrained(tiny_model_dir)
    spec = HeadSpec("atis", "intent_slots", "intent_slots", len(labels), "cls", 0.0, labels)
    return MultiTaskModel.build(enc, {"atis": spec}).eval()


def test_predict_records_give_intent_probs_and_a_tag_per_word(tiny_model_dir: Path, tok) -> None:
    from mtfuse.evaluate import predict_encoded, records

    task = _task(VOCAB)
    task.cfg.max_length = 5  # [CLS] fares to new [SEP]: 'york' is cut and gets O
    enc, gold = encode_rows(_rows(ROWS), task, "dev", Tokenizing(tok, None))
    preds, probs = predict_encoded(_model(tiny_model_dir, VOCAB), task, enc, 2, torch.device("cpu"), 0)
    assert [len(p) for p in preds] == [4, 5, 4] and probs[1].shape == (5, len(VOCAB))
    recs = records(task, preds, probs, gold)
    r = recs[1]
    assert r["intent"] in {"fare", "fare#flight", "flight", "<unseen>"} and r["intent"] != "<unseen>"
    assert set(r["intent_probs"]) == {"<unseen>", "fare", "fare#flight", "flight"}
    assert math.isclose(sum(r["intent_probs"].values()), 1.0, abs_tol=1e-4)
    assert len(r["tags"]) == 4 and r["tags"][-1] == "O" and len(r["probs"]) == 4
    assert all("<unseen>" not in t for t in r["tags"])
    assert r["gold"] == {"intent": "fare", "slots": ["O", "O", "B-city", "I-city"]}
    assert set(IS.score(task, preds, gold)) == {"intent_accuracy", "slot_f1", "frame_accuracy"}


def test_ensemble_averages_intent_and_slot_distributions() -> None:
    names_i = ["<unseen>", "fare", "fare#flight", "flight"]
    names_s = ["B-<unseen>", "B-city", "I-<unseen>", "I-city", "O"]

    def rec(intent: list[float], words: list[list[float]]) -> dict:
        return {
            "intent_probs": dict(zip(names_i, intent, strict=True)),
            "probs": [dict(zip(names_s, w, strict=True)) for w in words],
        }

    a = rec([0, 0.6, 0.1, 0.3], [[0, 0.2, 0, 0, 0.8], [0, 0.7, 0, 0, 0.3]])
    b = rec([0, 0.2, 0.1, 0.7], [[0, 0.4, 0, 0, 0.6], [0, 0.1, 0, 0.5, 0.4]])
    outs = [[IS.outputs(r, VOCAB, "rec")] for r in (a, b)]
    P, example = stack_outputs(IS, outs)
    assert P.shape == (2, 3, len(VOCAB)) and example.tolist() == [0, 0, 0]
    (fused,) = make_records(IS, VOCAB, P.mean(axis=0), example, 1)
    assert fused["intent"] == "flight" and fused["intent_probs"]["flight"] == pytest.approx(0.5)
    assert fused["tags"] == ["O", "B-city"] and fused["probs"][1]["I-city"] == pytest.approx(0.25)


def test_data_check_counts_examples_with_unseen_labels(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = tmp_path / "atis"
    _write_atis(root, "train", "to boston\nfares\n", "O B-city\nO\n", "flight\nfare\n")
    _write_atis(
        root, "test", "on monday\nto boston\nfares\n", "O B-day\nO B-city\nO\n", "day\nflight\nfare\n"
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{name_or_path: {tiny_model_dir}}}\ncache_dir: {tmp_path / 'cache'}\n"
        f"tasks:\n  - {{name: atis, type: intent_slots, data: {{format: atis, path: {root}}}}}\n",
        encoding="utf-8",
    )
    code, out, err = run_cli(["data", "check", cfg, "--json"])
    assert code == 0, err
    report = json.loads(out)["atis"]["test"]
    assert report["unseen_in_train"] == ["intent:day", "slot:B-day"] and report["examples_with_unseen"] == 1
    assert "(1 example(s)); train and evaluate map them to designated classes" in " ".join(err.split())


@pytest.mark.slow
@needs_atis
@pytest.mark.parametrize("mode", ["sampled", "joint"])
def test_atis_trains_with_sst2_on_minilm(shared_data_dir: Path, tmp_path: Path, mode: str) -> None:
    """configs/atis.yaml's task beside SST-2 on the real MiniLM: a few steps, then test keeps its 893."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        """
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"}}
  - name: atis
    type: intent_slots
    data: {format: atis, path: "{data_dir}/atis"}
    max_length: 64
    intent_slots: {slot_weight: 1.0}
""",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    common = [f"data_dir={shared_data_dir}", f"cache_dir={tmp_path / 'cache'}"]
    argv = [
        "train",
        cfg,
        *common,
        "subset.train=64",
        "subset.eval=32",
        "train.max_steps=4",
        "train.batch_size=8",
    ]
    argv += [f"train.step_mode={mode}", "train.lr=1e-4", "train.progress=false", "train.tensorboard=false"]
    code, out, err = run_cli([*argv, "--output", run])
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())["tasks"]
    assert set(metrics["atis"]) == {"intent_accuracy", "slot_f1", "frame_accuracy"}
    assert all(0.0 <= v <= 100.0 for v in metrics["atis"].values())
    code, out, err = run_cli(["evaluate", run, "--split", "test", *common, "only_tasks=[atis]"])
    assert code == 0, err
    assert json.loads((run / "metrics-test.json").read_text())["examples"]["atis"] == 893


def _id_config(tmp_path: Path, tiny_model_dir: Path, options: str, data_extra: str = "") -> Path:
    """A jsonl intent_slots task whose labels are ids (intent 0 / 1, slot tags 0 / 1 / 2)."""
    rows = [
        {"tokens": ["to", "boston"], "label": {"intent": 0, "slots": [0, 1]}},
        {"tokens": ["fares", "to", "new", "york"], "label": {"intent": 1, "slots": "0 0 1 2"}},
    ]
    data = tmp_path / "ids.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "slots.txt").write_text("O\nB-city\nI-city\n", encoding="utf-8")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{name_or_path: {tiny_model_dir}}}\ncache_dir: {tmp_path / 'cache'}\n"
        "tasks:\n  - name: atis\n    type: intent_slots\n    text_fields: [tokens]\n    label_field: label\n"
        f"    data: {{format: jsonl, files: {{train: {data}}}{data_extra}}}\n"
        f"    intent_slots: {options}\n",
        encoding="utf-8",
    )
    return cfg


def test_intent_and_slot_ids_map_to_names_through_their_own_maps(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from mtfuse.config import load
    from mtfuse.tasks.prepare import read_task_rows

    slots = tmp_path / "slots.txt"
    cfg = load(
        _id_config(tmp_path, tiny_model_dir, f"{{intent_map: {{0: flight, 1: fare}}, slot_map: {slots}}}")
    )
    rows = read_task_rows(cfg, "atis", "train")
    assert [r["label"] for r in rows] == [
        {"intent": "flight", "slots": ["O", "B-city"]},
        {"intent": "fare", "slots": "O O B-city I-city"},
    ]
    assert IS.vocab(rows, "label", None)[:2] == ["intent:<unseen>", "intent:fare"]

    # an id the map lacks names the row and the part of the label
    cfg = load(_id_config(tmp_path, tiny_model_dir, "{intent_map: {0: flight}}"))
    with pytest.raises(DataError, match=r"ids\.jsonl:2 \(field 'label\.intent'\): label id '1' is not in"):
        read_task_rows(cfg, "atis", "train")


def test_data_label_map_on_intent_slots_is_one_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _id_config(tmp_path, tiny_model_dir, "{slot_weight: 1.0}", ", label_map: {0: flight}")
    code, out, err = run_cli(["data", "check", cfg])
    assert code != 0 and "Traceback" not in err
    assert "data.label_map maps one kind of id" in " ".join(err.split())
    assert "intent_slots.intent_map" in err
