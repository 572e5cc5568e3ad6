"""Ensemble members: reading run directories, checking they agree, aligning their predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble import output as O
from mtfuse.fusion.ensemble.members import load_all, load_member
from tests.helpers.fusion import cls_task, fake_run, no_partial_output, two_fake_members


def _bad(tmp_path: Path, members: list[Path], match: str, **kw: Any) -> None:
    out = tmp_path / "out_ens"
    with pytest.raises(MtfuseError, match=match):
        O.ensemble_command(members, out, **kw)
    no_partial_output(out)


def test_members_with_different_label_sets(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(20, 0.6), gold, ("neg", "positive"))})
    _bad(tmp_path, [a, b], r"task 't'.*different label sets.*/a.*\['neg', 'pos'\].*/b.*\['neg', 'positive'\]")


def test_members_with_the_same_labels_in_another_order_are_aligned(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.7), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(20, 0.3), 1 - gold, ("pos", "neg"))})
    _, arrays = load_all([a, b])
    assert arrays["t"].labels == ["neg", "pos"]
    assert arrays["t"].P[1] == pytest.approx(arrays["t"].P[0])


def test_missing_predictions(tmp_path: Path) -> None:
    members = two_fake_members(tmp_path)
    (members[1] / "predictions" / "r.jsonl").unlink()
    _bad(tmp_path, members, r"m1: no dev predictions for task 'r' \(predictions/r.jsonl is missing")


def test_members_evaluated_with_mtfuse_evaluate(tmp_path: Path) -> None:
    """A merged model: no train predictions; `mtfuse evaluate` writes predictions/dev/, metrics-dev.json."""
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.where(gold == 1, 0.9, 0.1), gold)})
    (b / "predictions" / "dev").mkdir()
    (b / "predictions" / "t.jsonl").rename(b / "predictions" / "dev" / "t.jsonl")
    (b / "metrics.json").rename(b / "metrics-dev.json")
    assert load_member(b).tasks["t"].metrics == ["accuracy"]
    _, arrays = load_all([a, b])
    assert arrays["t"].member_scores() == [{"accuracy": 50.0}, {"accuracy": 100.0}]


def test_a_task_a_member_lacks(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(
        tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold), "u": cls_task(np.full(20, 0.6), gold)}
    )
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(20, 0.6), gold)})
    _bad(tmp_path, [a, b], r"/b: has no task 'u'; it has \[t\]", tasks=["t,u"])
    c = fake_run(tmp_path / "c", {"v": cls_task(np.full(20, 0.6), gold)})
    _bad(tmp_path, [a, c], "the members share no task")
    assert list(O.fuse([a, b]).tasks) == ["t"]  # by default, the tasks all members share


def test_dev_split_too_small_for_k_folds(tmp_path: Path) -> None:
    gold = np.array([0, 1, 0, 1, 1, 0, 1])
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(7, 0.6), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(7, 0.4), gold)})
    _bad(tmp_path, [a, b], r"task 't'.*7 examples, too few for 5-fold", method="weighted_nll")
    O.ensemble_command([a, b], tmp_path / "fine", method="weighted_nll", folds=3)
    O.ensemble_command([a, b], tmp_path / "untuned", method="mean")  # nothing tuned: no folds needed


def test_members_scored_on_different_dev_examples(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold)})
    b = fake_run(tmp_path / "b", {"t": cls_task(np.full(20, 0.6), gold[::-1])})
    _bad(tmp_path, [a, b], r"task 't': dev example 0 has gold 'pos' in .*/b but 'neg' in .*/a")
    c = fake_run(tmp_path / "c", {"t": cls_task(np.full(18, 0.6), gold[:18])})
    _bad(tmp_path, [a, c], r"task 't': .*/c has 18 dev predictions but .*/a has 20")


def test_other_bad_members(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    a = fake_run(tmp_path / "a", {"t": cls_task(np.full(20, 0.6), gold)})
    _bad(tmp_path, [a, tmp_path / "nope"], r"nope: run directory not found")
    (tmp_path / "empty").mkdir()
    _bad(tmp_path, [a, tmp_path / "empty"], r"empty: not a run directory")
    _bad(tmp_path, [a, a], r"given twice")
    _bad(
        tmp_path,
        [a],
        r"unknown ensemble method 'avg'; choose from \[caruana, caruana_bagged, mean",
        method="avg",
    )
    # token predictions written before full per-word distributions were saved
    tok = {
        "type": "token_classification",
        "labels": ["O", "B-X"],
        "metrics": ["seqeval_f1"],
        "records": [{"index": 0, "tags": ["O"], "probs": [0.9], "gold": ["O"]}],
    }
    old = fake_run(tmp_path / "old", {"k": tok})
    _bad(tmp_path, [old], r"old/predictions/k.jsonl:1: 'probs' holds only each word's top probability")
    broken = fake_run(tmp_path / "broken", {"t": cls_task(np.full(20, 0.6), gold)})
    with open(broken / "predictions" / "t.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
    _bad(tmp_path, [a, broken], r"broken/predictions/t.jsonl:21: not valid JSON")


def test_a_task_name_that_escapes_the_output_is_refused(tmp_path: Path) -> None:
    """Issue 15: a member whose heads.json names a task '../../x/escaped' must not make ensemble write (or
    read) outside its directories; the name is refused when the member is read."""
    gold = np.array([0, 1] * 10)
    bad = fake_run(tmp_path / "deep" / "er" / "m", {"t": cls_task(np.full(20, 0.6), gold)})
    heads = json.loads((bad / "model" / "heads.json").read_text())
    heads["heads"][0]["task"] = "../../x/escaped"
    (bad / "model" / "heads.json").write_text(json.dumps(heads))
    (tmp_path / "deep" / "x").mkdir()
    (tmp_path / "deep" / "x" / "escaped.jsonl").write_text("")  # where a path built from the name points
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(
        MtfuseError, match=r"heads.json heads\[0\]: task name '../../x/escaped' is not allowed"
    ):
        O.ensemble_command([bad], out)
    no_partial_output(out)
    assert sorted(
        p.name for p in (tmp_path / "deep").rglob("*") if p.is_file() and "model" not in p.parts
    ) == [
        "escaped.jsonl",
        "metrics.json",
        "results.json",
        "t.jsonl",
    ]
    # an ensemble.json naming such a task, and --tasks, are refused the same way
    good = fake_run(tmp_path / "good", {"t": cls_task(np.full(20, 0.6), gold)})
    ens = tmp_path / "ens"
    O.ensemble_command([good], ens)
    spec = json.loads((ens / "ensemble.json").read_text())
    spec["tasks"]["../evil"] = spec["tasks"].pop("t")
    (ens / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(
        MtfuseError, match=r"ensemble.json tasks\['../evil'\]: task name '../evil' is not allowed"
    ):
        load_member(ens)
    with pytest.raises(MtfuseError, match="--tasks: task name '../t' is not allowed"):
        O.ensemble_command([good], tmp_path / "o2", tasks=["../t"])


@pytest.mark.parametrize("field", ["task_type", "task"])
def test_heads_json_without_a_field_is_one_clear_error(tmp_path: Path, field: str) -> None:
    """Issue 15: a member's heads.json without task_type (or task) names the file and the field."""
    gold = np.array([0, 1] * 10)
    m = fake_run(tmp_path / "m", {"t": cls_task(np.full(20, 0.6), gold)})
    heads = json.loads((m / "model" / "heads.json").read_text())
    del heads["heads"][0][field]
    (m / "model" / "heads.json").write_text(json.dumps(heads))
    with pytest.raises(MtfuseError, match=rf"m/model/heads.json heads\[0\] \(field '{field}'\): missing"):
        O.ensemble_command([m], tmp_path / "out")
    no_partial_output(tmp_path / "out")


def test_other_malformed_member_files(tmp_path: Path) -> None:
    gold = np.array([0, 1] * 10)
    m = fake_run(tmp_path / "m", {"t": cls_task(np.full(20, 0.6), gold)})
    heads_file = m / "model" / "heads.json"
    for bad, match in [
        ({"format_version": 1}, r"heads.json \(field 'heads'\): missing"),
        ({"heads": {"t": 1}}, r"heads.json \(field 'heads'\): expected list"),
        ({"heads": ["t"]}, r"heads.json heads\[0\]: expected a JSON object, got str"),
        ({"heads": [{"task": "t", "task_type": 3}]}, r"\(field 'task_type'\): expected str, got 3"),
        ({"heads": [{"task": "t", "task_type": "classification"}]}, r"\(field 'labels'\): missing"),
        ({"heads": [{"task": "t", "task_type": "nope"}]}, r"unknown task type 'nope'; choose from"),
    ]:
        heads_file.write_text(json.dumps(bad))
        with pytest.raises(MtfuseError, match=match):
            load_member(m)
    ens = tmp_path / "ens"
    fake = fake_run(tmp_path / "f", {"t": cls_task(np.full(20, 0.6), gold)})
    O.ensemble_command([fake], ens)
    spec = json.loads((ens / "ensemble.json").read_text())
    del spec["tasks"]["t"]["type"]
    (ens / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(MtfuseError, match=r"ensemble.json tasks\['t'\] \(field 'type'\): missing"):
        load_member(ens)
