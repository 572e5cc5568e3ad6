"""Multiple choice: the head's shape, the loss, (context, choice) encoding and collation, the COPA reader, and
COPA end to end with the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mtfuse.config import DataConfig, TaskConfig
from mtfuse.errors import DataError
from mtfuse.model.heads import build_head
from mtfuse.tasks.features import TaskData, Tokenizing, collate, encode_rows
from mtfuse.tasks.readers import READERS
from mtfuse.tasks.types import TASK_TYPES
from tests.helpers.cli import run_cli

COPA = Path(__file__).parents[2].parent / "shared" / "data" / "copa" / "COPA-resources" / "datasets"
CONFIGS = Path(__file__).parents[2] / "configs"
MC = TASK_TYPES.get("multiple_choice")
needs_copa = pytest.mark.skipif(not COPA.is_dir(), reason="no ../shared/data/copa")


def _spec(k: int, pooling: str = "cls") -> SimpleNamespace:
    return SimpleNamespace(head="multiple_choice", num_outputs=k, pooling=pooling, dropout=0.0)


def test_head_scores_each_pair_and_reshapes_to_choices() -> None:
    torch.manual_seed(0)
    head = build_head(_spec(4), hidden_size=8)
    assert tuple(head.classifier.weight.shape) == (1, 8)  # one score per (context, choice) sequence
    hidden = torch.randn(3 * 4, 5, 8)
    logits = head(hidden, torch.ones(12, 5, dtype=torch.long), None)
    assert tuple(logits.shape) == (3, 4)
    # row b's choice c is sequence b * 4 + c
    want = head.classifier(hidden[:, 0]).reshape(3, 4)
    torch.testing.assert_close(logits, want)
    with pytest.raises(Exception, match="whole number"):
        head(torch.randn(5, 5, 8), None, None)


def test_loss_is_cross_entropy_over_the_choices() -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]])
    labels = torch.tensor([2, 0])
    want = -(torch.log_softmax(logits, -1)[torch.arange(2), labels]).mean()
    torch.testing.assert_close(MC.loss(logits, labels), want)
    torch.testing.assert_close(MC.loss(logits, labels), F.cross_entropy(logits, labels))
    pred, prob = MC.predict(logits)
    assert pred.tolist() == [2, 0] and prob.shape == (2, 3)
    rec = MC.record(pred[0], prob[0], ["0", "1", "2"])
    assert rec["label"] == "2" and rec["choice"] == 2 and set(rec["probs"]) == {"0", "1", "2"}


def test_labels_are_choice_indices() -> None:
    rows = [{"label": 0, "_where": "r1"}, {"label": "2", "_where": "r2"}]
    assert MC.vocab(rows, "label", None) == ["0", "1", "2"]
    assert MC.encode_label(1.0, ["0", "1", "2"], "r", "label", "train") == 1
    for bad in ("b", -1, True, 1.5):
        with pytest.raises(DataError, match="index of the right choice|choice index"):
            MC.encode_label(bad, ["0", "1"], "r", "label", "train")


def _task(labels: list[str]) -> TaskData:
    tc = TaskConfig(
        name="t",
        type="multiple_choice",
        data={"format": "jsonl", "files": {"train": "x"}},
        text_fields=["context", "endings"],
        label_field="label",
    )
    return TaskData(tc, MC, ["context", "endings"], "label", labels)


def test_pairs_are_encoded_per_choice_and_collated_flat(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [
        {"context": "The man fell.", "endings": ["He slipped.", "It rained a lot today."], "label": 0},
        {"context": "She ate.", "endings": ["She was hungry.", "She slept."], "label": 1},
        {"context": "It was cold.", "endings": ["Snow.", "Sun."], "label": 0},
    ]
    rows = [{**r, "_where": f"f.jsonl:{i + 1}"} for i, r in enumerate(rows)]
    task = _task(["0", "1"])
    enc, gold = encode_rows(rows, task, "train", Tokenizing(tok, tmp_path / "cache"))
    assert len(enc) == 3 and enc.group == 2 and len(enc.input_ids) == 6 and gold == [0, 1, 0]
    want = tok("The man fell.", "It rained a lot today.")["input_ids"]
    assert enc.input_ids[1].tolist() == want
    assert enc.lengths()[0] == max(len(enc.input_ids[0]), len(enc.input_ids[1]))
    batch = collate(enc, [2, 0], 0, MC)
    assert batch["input_ids"].shape[0] == 4 and batch["labels"].tolist() == [0, 0]
    assert batch["input_ids"][3, : len(want)].tolist() == want  # example 0, choice 1: the fourth row
    again, _ = encode_rows(rows, task, "train", Tokenizing(tok, tmp_path / "cache"))  # from the cache
    assert again.group == 2 and [x.tolist() for x in again.input_ids] == [x.tolist() for x in enc.input_ids]

    bad = [*rows, {"context": "x", "endings": ["a", "b", "c"], "label": 0, "_where": "f.jsonl:4"}]
    with pytest.raises(DataError, match=r"f\.jsonl:4.*3 choices, but the task has 2"):
        encode_rows(bad, task, "train", Tokenizing(tok, None))
    with pytest.raises(DataError, match=r"f\.jsonl:9.*two or more choices"):
        encode_rows(
            [{"context": "x", "endings": "a", "label": 0, "_where": "f.jsonl:9"}],
            task,
            "train",
            Tokenizing(tok, None),
        )


@needs_copa
def test_copa_reader_dev_and_test() -> None:
    reader = READERS.get("copa")
    data = DataConfig(format="copa", path=str(COPA.parents[1]))
    assert reader.splits(data) == ["dev", "test"]
    assert reader.defaults(data) == (["context", "choices"], "label")
    dev = reader.read(data, "dev")
    assert len(dev) == 500 and len(reader.read(data, "test")) == 500
    assert sum(r["label"] == 0 for r in dev) == 250 and sum(r["label"] == 1 for r in dev) == 250
    first = dev[0]
    assert first["premise"] == "My body cast a shadow over the grass."
    assert first["context"] == "My body cast a shadow over the grass. What was the CAUSE of this?"
    assert first["choices"] == ["The sun was rising.", "The grass was cut."] and first["label"] == 0
    assert first["_where"].endswith("copa-dev.xml:5")
    effects = [r for r in dev if r["question"] == "effect"]
    assert len(effects) == 250 and all(r["context"].endswith(" What happened as a RESULT?") for r in effects)


def test_copa_reader_errors(tmp_path: Path) -> None:
    path = tmp_path / "copa-dev.xml"
    item = '<item id="1" asks-for="cause" most-plausible-alternative="2"><p>P.</p><a1>A.</a1>{a2}</item>'
    path.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE copa-corpus SYSTEM "copa.dtd">\n<copa-corpus>\n'
        + item.format(a2="<a2>B.</a2>")
        + "\n"
        + item.format(a2="")
        + "\n</copa-corpus>\n",
        encoding="utf-8",
    )
    data = DataConfig(format="copa", files={"train": str(path)})
    with pytest.raises(DataError, match=r"copa-dev\.xml:5: item 1 has no alternative 2"):
        READERS.get("copa").read(data, "train")
    path.write_text("<copa-corpus>\n<item>\n</copa-corpus>\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"copa-dev\.xml:3: not well-formed XML"):
        READERS.get("copa").read(data, "train")


@needs_copa
def test_copa_config_with_the_tiny_model(shared_data_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """configs/copa.yaml as shipped (train = the dev file, a fifth carved out as dev), tiny random model."""
    run = tmp_path / "copa"
    common = [
        f"data_dir={shared_data_dir}",
        f"model.name_or_path={tiny_model_dir}",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    argv = [
        "train",
        CONFIGS / "copa.yaml",
        *common,
        "subset.train=32",
        "train.max_steps=3",
        "train.batch_size=8",
        "train.progress=false",
        "train.tensorboard=false",
        "--output",
        run,
    ]
    code, out, err = run_cli(argv)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]["copa"]) == {"accuracy"}
    preds = [json.loads(x) for x in (run / "predictions" / "copa.jsonl").read_text().splitlines()]
    assert len(preds) == 100  # the carved dev: a fifth of 500
    assert all(set(p["probs"]) == {"0", "1"} and p["choice"] in (0, 1) for p in preds)
    assert sum(p["gold"] == "0" for p in preds) == 50  # stratified by the right choice
    code, out, err = run_cli(["evaluate", run, "--split", "test", "subset.eval=20"])
    assert code == 0, err
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        json.dumps({"context": "It rained. What happened as a RESULT?", "choices": ["Wet.", "Dry."]})
    )
    code, out, err = run_cli(
        ["predict", run, "--task", "copa", "--input", inp, "--output", tmp_path / "p.jsonl"]
    )
    assert code == 0, err
    assert json.loads((tmp_path / "p.jsonl").read_text())["choice"] in (0, 1)


@needs_copa
@pytest.mark.parametrize("mode", ["sampled", "joint"])
def test_copa_trains_with_a_glue_task(cli_config, tmp_path: Path, mode: str) -> None:
    """COPA beside RTE in one model, in both step modes."""
    cfg, common = cli_config(
        """
tasks:
  - {name: rte, type: pair_classification, data: {format: glue, task: RTE, path: "{data_dir}/glue/RTE"}}
  - name: copa
    type: multiple_choice
    data: {format: copa, path: "{data_dir}/copa", files: {train: COPA-resources/datasets/copa-dev.xml}, dev_from_train: 0.2}
"""
    )
    run = tmp_path / "run"
    argv = [
        "train",
        cfg,
        *common,
        "subset.train=16",
        "subset.eval=8",
        "train.max_steps=2",
        "train.batch_size=4",
    ]
    argv += [f"train.step_mode={mode}", "train.progress=false", "train.tensorboard=false", "--output", run]
    code, out, err = run_cli(argv)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"rte", "copa"}
