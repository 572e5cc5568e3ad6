"""Semantic role labelling: the CoNLL-U + PropBank reader and its quirks, the predicate indicator, the metric,
the head, records, carving dev by sentence, the shipped config, and (slow) the real MiniLM beside CoNLL NER."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mtfuse.config import DataConfig, TaskConfig
from mtfuse.errors import DataError
from mtfuse.metrics import METRICS
from mtfuse.model.heads import build_head
from mtfuse.tasks.features import TaskData, Tokenizing, collate, encode_rows
from mtfuse.tasks.readers import READERS, carve_dev
from mtfuse.tasks.readers.conllu_srl import read_conllu_srl
from mtfuse.tasks.types import IGNORE_INDEX, TASK_TYPES
from tests.helpers.cli import run_cli

SRL = TASK_TYPES.get("srl")
CONFIGS = Path(__file__).parents[2] / "configs"
UP = Path(__file__).parents[2].parent / "shared" / "data" / "up_english_ewt"
needs_up = pytest.mark.skipif(not UP.is_dir(), reason="no ../shared/data/up_english_ewt")


def _line(i: str, word: str, head: str, rel: str, roleset: str = "_", *args: str) -> str:
    return "\t".join([i, word, word.lower(), "X", "X", "_", head, rel, "_", "_", roleset, *args])


# Every quirk of the Universal PropBank files, in four sentences:
SNIPPET = "\n".join(
    [
        "# sent_id = s1",  # two predicates; a multiword range (3-4) and an empty node (5.1) to skip
        _line("1", "John", "2", "nsubj", "_", "ARG0", "_"),
        _line("2", "wants", "0", "root", "want.01", "V", "_"),
        "3-4\tto-go\t_\t_\t_\t_\t_\t_\t_\t_",
        _line("3", "to", "4", "mark", "_", "_", "_"),
        _line("4", "go", "2", "xcomp", "go.02", "ARG1", "V"),
        "5.1\tgoes\tgo\tVERB\tVBZ\t_\t_\t_\t2:conj\tCopyOf=4\t\t\t",
        _line("5", "home", "4", "obj", "_", "_", "ARGM-DIR"),
        "",
        "# sent_id = s2",  # no predicate: one empty argument column, the line ends with a tab
        _line("1", "Hello", "0", "root", "_", ""),
        _line("2", "!", "1", "punct", "_", ""),
        "",
        "# propbank = no-up",  # not annotated: columns 11 and 12 empty
        "# sent_id = s3",
        _line("1", "Green", "2", "amod", "", ""),
        _line("2", "tea", "0", "root", "", ""),
        "",
        "# sent_id = s4",  # three rolesets, two argument columns: each column goes to the roleset its V is on
        _line("1", "She", "2", "nsubj", "_", "ARG0", "_"),
        _line("2", "said", "0", "root", "say.01", "V", "_"),
        _line("3", "it", "4", "nsubj", "_", "_", "ARG1"),
        _line("4", "works", "2", "ccomp", "work.01", "ARG1", "_"),
        _line("5", "fine", "4", "xcomp", "fine.01", "_", "V"),
        "",
    ]
)


def test_reader_one_row_per_predicate_and_the_quirks(tmp_path: Path) -> None:
    path = tmp_path / "x.conllu"
    path.write_text(SNIPPET, encoding="utf-8")
    rows, stats = read_conllu_srl(path)
    assert [(r["sentence"], r["predicate"], r["roleset"]) for r in rows] == [
        ("s1", 1, "want.01"),
        ("s1", 3, "go.02"),
        ("s4", 1, "say.01"),
        ("s4", 4, "fine.01"),
    ]
    first = rows[0]
    assert first["words"] == ["John", "wants", "to", "go", "home"]  # no range, no empty node
    assert first["roles"] == ["ARG0", "V", "O", "ARG1", "O"]
    assert rows[1]["roles"] == ["O", "O", "O", "V", "ARGM-DIR"]
    assert first["deprels"] == ["nsubj", "root", "mark", "xcomp", "obj"]
    assert first["heads"] == [1, -1, 3, 1, 3]  # 0-based, -1 = root
    assert first["_where"] == f"{path}:3" and rows[1]["_where"] == f"{path}:6"  # the predicate's line
    assert rows[3]["roles"] == ["O", "O", "ARG1", "O", "V"]
    assert stats == {
        "sentences": 4,
        "predicates": 4,
        "sentences_without_predicate": 2,
        "sentences_marked_no_up": 1,
        "sentences_rolesets_columns_differ": 1,
        "rolesets_without_column": 1,  # work.01: its arguments are unknown, so it gives no row
        "multiword_tokens": 1,
        "empty_nodes": 1,
    }
    reader = READERS.get("conllu_srl")
    data = DataConfig(format="conllu_srl", files={"train": str(path)})
    assert reader.splits(data) == ["train"] and reader.defaults(data) == (["words", "predicate"], "roles")
    assert len(reader.read(data, "train")) == 4


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            _line("2", "wants", "0", "root", "want.01", "V"),
            r"x\.conllu:3: 12 columns, but this sentence's first word line \(\S+x\.conllu:2\) has 13",
        ),
        ("2\twants\twant", r"x\.conllu:3: 3 tab-separated columns; CoNLL-U has 10"),
        (
            "\t".join(["2", "w", "w", "X", "X", "_", "0", "root", "_", "_"]),
            r"x\.conllu:3: 10 columns; expected",
        ),
        (_line("7", "wants", "0", "root", "want.01", "V", "_"), r"x\.conllu:3: word id 7, expected 2"),
        (_line("two", "wants", "0", "root", "want.01", "V", "_"), r"x\.conllu:3: word id 'two' is not"),
        (_line("2", "wants", "0", "root", "want.01", "V", ""), r"x\.conllu:3: empty argument cell"),
    ],
)
def test_reader_errors_name_the_file_and_line(tmp_path: Path, bad: str, message: str) -> None:
    path = tmp_path / "x.conllu"
    path.write_text(
        "# sent_id = a\n" + _line("1", "John", "2", "nsubj", "_", "ARG0", "_") + "\n" + bad + "\n"
    )
    with pytest.raises(DataError, match=message):
        read_conllu_srl(path)


def test_a_bad_file_is_one_clear_error_at_the_cli(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "x.conllu"
    path.write_text(
        _line("1", "Run", "0", "root", "run.01", "V") + "\n" + _line("2", "!", "1", "punct") + "\n"
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"tasks:\n  - {{name: srl, type: srl, data: {{format: conllu_srl, files: {{train: {path}, dev: {path}}}}}}}\n"
        f"model: {{name_or_path: {tiny_model_dir}}}\ncache_dir: {tmp_path / 'cache'}\n"
    )
    code, out, err = run_cli(["train", cfg, "--output", tmp_path / "run"])
    assert code != 0 and "Traceback" not in err
    assert f"{path}:2: 11 columns, but this sentence's first word line ({path}:1) has 12" in err


def _task(labels: list[str], metrics: list[str] | None = None) -> TaskData:
    data = {"format": "conllu_srl", "files": {"train": "x"}}
    tc = TaskConfig(name="srl", type="srl", data=data, max_length=64, metrics=metrics)
    return TaskData(tc, SRL, ["words", "predicate"], "roles", labels)


LABELS = ["ARG0", "ARG1", "O", "V"]


def test_predicate_indicator_marks_the_predicates_subwords(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = ["Dogs", "unsubscribed", "newsletters"]
    assert len(tok.tokenize("unsubscribed")) > 1  # the predicate is several sub-words
    rows = [
        {"words": words, "predicate": 1, "roleset": "x.01", "roles": ["ARG0", "V", "ARG1"], "_where": "r:1"},
        {"words": words, "predicate": "2", "roles": ["O", "ARG0", "V"], "_where": "r:2"},
    ]
    task = _task(LABELS)
    enc, gold = encode_rows(rows, task, "train", Tokenizing(tok, tmp_path / "cache"))
    assert gold == [["ARG0", "V", "ARG1"], ["O", "ARG0", "V"]]
    for i, k in ((0, 1), (1, 2)):
        wid, tt = enc.word_ids[i], enc.token_type_ids[i]
        assert tt.tolist() == [int(w == k) for w in wid.tolist()] and tt.sum() == len(tok.tokenize(words[k]))
    assert enc.extra["predicate"].tolist() == [1, 2] and enc.extra["roleset"] == ["x.01", "_"]
    # roles on each word's first sub-word only
    first = [j for j, w in enumerate(enc.word_ids[0].tolist()) if w >= 0 and w != enc.word_ids[0][j - 1]]
    assert enc.labels[0][first].tolist() == [0, 3, 1]
    assert (enc.labels[0] != IGNORE_INDEX).sum() == 3
    batch = collate(enc, [0, 1], 0, SRL)
    assert batch["token_type_ids"][0, : len(enc.token_type_ids[0])].tolist() == enc.token_type_ids[0].tolist()

    # a role train never had: an error in train; elsewhere it stays in the gold (a missed argument) untrained
    odd = [{**rows[0], "roles": ["ARGM-TMP", "V", "ARG1"]}]
    with pytest.raises(DataError, match=r"r:1.*'ARGM-TMP' in split 'train' is not among"):
        encode_rows(odd, task, "train", Tokenizing(tok, None))
    enc, gold = encode_rows(odd, task, "test", Tokenizing(tok, None))
    assert gold == [["ARGM-TMP", "V", "ARG1"]] and enc.labels[0][first].tolist() == [IGNORE_INDEX, 3, 1]

    for bad, message in (
        (3, "predicate index 3 is not a word"),
        (True, "expected the predicate's word index"),
    ):
        with pytest.raises(DataError, match=rf"r:1 \(field 'predicate'\): {message}"):
            encode_rows([{**rows[0], "predicate": bad}], task, "train", Tokenizing(tok, None))
    with pytest.raises(DataError, match="3 words but 2 roles"):
        encode_rows([{**rows[0], "roles": ["O", "V"]}], task, "train", Tokenizing(tok, None))


def test_metric_counts_labelled_argument_triples() -> None:
    gold = [["ARG0", "V", "ARG1", "O"], ["O", "ARG0", "V", "ARGM-TMP"]]
    pred = [["ARG0", "V", "ARG2", "O"], ["ARG1", "ARG0", "O", "ARGM-TMP"]]
    # gold arguments: (0,0,ARG0) (0,2,ARG1) (1,1,ARG0) (1,3,ARGM-TMP) = 4 (V is not one)
    # predicted: (0,0,ARG0) (0,2,ARG2) (1,0,ARG1) (1,1,ARG0) (1,3,ARGM-TMP) = 5; correct: 3
    p, r = 100 * 3 / 5, 100 * 3 / 4
    assert METRICS.get("srl_precision")(pred, gold) == pytest.approx(p)
    assert METRICS.get("srl_recall")(pred, gold) == pytest.approx(r)
    assert METRICS.get("srl_f1")(pred, gold) == pytest.approx(2 * p * r / (p + r))
    # the same (word, role) under another predicate is another argument
    assert METRICS.get("srl_f1")([["ARG0"], ["O"]], [["ARG0"], ["ARG0"]]) == pytest.approx(100 * 2 / 3)
    assert METRICS.get("srl_f1")([["O", "V"]], [["O", "V"]]) == 0.0  # no argument anywhere
    with pytest.raises(ValueError, match="differ in number or length"):
        METRICS.get("srl_f1")([["O"]], [["O", "V"]])


def test_score_records_and_fusion_targets() -> None:
    task = _task(LABELS, ["srl_f1", "srl_recall"])
    preds = [{"roles": [0, 3, 1], "predicate": 1, "roleset": "x.01"}, [2, 2]]
    got = SRL.score(task, preds, [["ARG0", "V", "ARG1"], ["ARG0", "O"]])
    assert got == {"srl_f1": pytest.approx(80.0), "srl_recall": pytest.approx(100 * 2 / 3)}
    probs = [np.eye(4)[[0, 3, 1]]]
    rec = SRL.record(preds[0], probs[0], LABELS)
    assert rec["tags"] == ["ARG0", "V", "ARG1"] and rec["predicate"] == 1 and rec["roleset"] == "x.01"
    assert rec["probs"][0] == {"ARG0": 1.0, "ARG1": 0.0, "O": 0.0, "V": 0.0}
    fused = SRL.complete_record({"tags": ["ARG0"], "probs": []}, {**rec, "tokens": ["a", "b", "c"]})
    assert fused["tags"] == ["ARG0", "O", "O"] and fused["predicate"] == 1 and fused["roleset"] == "x.01"
    assert SRL.targets(["ARG0", "ARGM-TMP", "V"], LABELS, 3, "here").tolist() == [0, 2, 3]  # unseen -> O


def test_head_concatenates_the_predicate_state() -> None:
    torch.manual_seed(0)
    spec = SimpleNamespace(head="srl", num_outputs=5, pooling="cls", dropout=0.0)
    head = build_head(spec, hidden_size=8)
    assert head.takes_batch and tuple(head.classifier.weight.shape) == (5, 16)
    hidden = torch.randn(2, 4, 8)
    tt = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1]])
    logits = head(hidden, torch.ones(2, 4), None, batch={"token_type_ids": tt})
    assert tuple(logits.shape) == (2, 4, 5)
    pred0 = hidden[0, 1:3].mean(0)
    want = head.classifier(torch.cat([hidden[0], pred0.expand(4, 8)], -1))
    torch.testing.assert_close(logits[0], want)
    with pytest.raises(Exception, match="token_type_ids"):
        head(hidden, None, None, batch={})


def test_dev_group_keeps_a_sentence_on_one_side() -> None:
    rows = [{"sentence": f"s{i // 3}", "x": i} for i in range(30)]  # 10 sentences of 3 predicates
    dev = carve_dev(rows, 0.2, 0, None, "t", group="sentence")
    assert len(dev) == 6 and len({rows[i]["sentence"] for i in dev}) == 2
    assert dev == carve_dev(rows, 0.2, 0, None, "t", group="sentence")  # seeded
    with pytest.raises(DataError, match="one 'sentence' group"):
        carve_dev(rows[:3], 0.2, 0, None, "t", group="sentence")


@needs_up
def test_real_files_counts_and_the_shipped_config(
    shared_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    _, dev = read_conllu_srl(UP / "en_ewt-up-dev.conllu")
    _, test = read_conllu_srl(UP / "en_ewt-up-test.conllu")
    assert dev["sentences"] == 2002 and test["sentences"] == 2077
    assert dev["predicates"] == 4977 and test["predicates"] == 4799  # one row per argument column
    assert dev["empty_nodes"] == 2 and test["empty_nodes"] == 1
    # the data README's 438 / 524 without predicate + the 28 / 15 sentences marked `propbank = no-up`
    assert dev["sentences_without_predicate"] == 438 + 28 and dev["sentences_marked_no_up"] == 28
    assert test["sentences_without_predicate"] == 524 + 15 and test["sentences_marked_no_up"] == 15

    run = tmp_path / "srl"
    common = [
        f"data_dir={shared_data_dir}",
        f"model.name_or_path={tiny_model_dir}",
        f"cache_dir={tmp_path / 'c'}",
    ]
    argv = ["train", CONFIGS / "srl.yaml", *common, "subset.train=32", "subset.eval=16", "train.max_steps=2"]
    argv += ["train.batch_size=8", "train.progress=false", "train.tensorboard=false", "--output", run]
    code, out, err = run_cli(argv)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]["srl"]) == {"srl_f1", "srl_precision", "srl_recall"}
    recs = [json.loads(x) for x in (run / "predictions" / "srl.jsonl").read_text().splitlines()]
    assert len(recs) == 16 and all({"tags", "probs", "predicate", "roleset", "gold"} <= set(r) for r in recs)
    assert all(r["gold"][r["predicate"]] == "V" for r in recs if r["roleset"] != "_")
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"words": ["She", "sold", "the", "car", "."], "predicate": 1}) + "\n")
    code, out, err = run_cli(
        ["predict", run, "--task", "srl", "--input", inp, "--output", tmp_path / "p.jsonl"]
    )
    assert code == 0, err
    rec = json.loads((tmp_path / "p.jsonl").read_text())
    assert rec["predicate"] == 1 and len(rec["tags"]) == 5 and rec["tokens"][1] == "sold"


@pytest.mark.slow
@needs_up
@pytest.mark.parametrize("mode", ["sampled", "joint"])
def test_real_minilm_learns_srl_beside_conll_ner(shared_data_dir: Path, tmp_path: Path, mode: str) -> None:
    """The packaged MiniLM, a few steps on a small slice of SRL and CoNLL-2003 NER in one model."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        """
tasks:
  - {name: conll, type: token_classification, data: {format: conll, path: "{data_dir}/conll2003"}}
  - name: srl
    type: srl
    data:
      format: conllu_srl
      path: "{data_dir}/up_english_ewt"
      files: {train: en_ewt-up-dev.conllu, test: en_ewt-up-test.conllu}
      dev_from_train: 0.2
      dev_group: sentence
    max_length: 96
"""
    )
    run = tmp_path / "run"
    argv = ["train", cfg, f"data_dir={shared_data_dir}", f"cache_dir={tmp_path / 'cache'}", "subset.train=64"]
    argv += [
        "subset.eval=32",
        "train.max_steps=6",
        "train.batch_size=8",
        "train.lr=1e-4",
        f"train.step_mode={mode}",
    ]
    argv += ["train.progress=false", "train.tensorboard=false", "--output", run]
    code, out, err = run_cli(argv)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"conll", "srl"}
    assert 0.0 <= metrics["tasks"]["srl"]["srl_f1"] <= 100.0
    recs = [json.loads(x) for x in (run / "predictions" / "srl.jsonl").read_text().splitlines()]
    assert len(recs) == 32 and all(r["tags"][r["predicate"]] in set(r["probs"][0]) for r in recs)
