"""`mtfuse ensemble`: the output directory it writes, and ensembles of real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble import methods as M
from mtfuse.fusion.ensemble import output as O
from mtfuse.fusion.ensemble.members import load_all, load_member
from tests.helpers.fusion import cls_task, fake_run, no_partial_output, two_fake_members


def test_ensemble_of_fake_runs_writes_a_run_like_directory(tmp_path: Path) -> None:
    members = two_fake_members(tmp_path)
    out = tmp_path / "ens"
    fusion = O.ensemble_command(members, out, method="weighted_nll", folds=4, seed=1)
    assert sorted(p.name for p in out.iterdir()) == [
        ".mtfuse.json",  # who wrote it (mtfuse.rundir): only an ensemble or a stack may replace it
        "README.md",  # the model card
        "diversity.json",
        "ensemble.json",
        "metrics.json",
        "predictions",
        "results.json",
    ]
    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["kind"] == "ensemble" and spec["method"] == "weighted_nll"
    assert spec["protocol"]["folds"] == 4 and spec["protocol"]["seed"] == 1
    assert "out-of-fold" in spec["protocol"]["text"] and spec["protocol"]["reported"] == "out-of-fold"
    assert [m["path"] for m in spec["members"]] == [str(m.resolve()) for m in members]
    for t in ("a", "r"):
        assert len(spec["tasks"][t]["weights"]) == 2 and sum(spec["tasks"][t]["weights"]) == pytest.approx(1)
        assert len(spec["tasks"][t]["fold_weights"]) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "dev" and set(metrics["tasks"]) == {"a", "r"}
    assert metrics["average"] == pytest.approx(
        np.mean([metrics["tasks"]["a"]["accuracy"], metrics["tasks"]["r"]["pearson"]])
    )
    assert metrics["tasks"] == {t: f.metrics for t, f in fusion.tasks.items()}
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "ensemble" and results["cost"]["parameters"] == 2000
    assert results["cost"]["train_seconds"] == pytest.approx(4.0)
    recs = [json.loads(line) for line in (out / "predictions" / "a.jsonl").read_text().splitlines()]
    assert len(recs) == 20 and set(recs[0]) == {"index", "label", "probs", "gold"}
    # the ensemble directory is itself a valid member (and its predictions are its out-of-fold outputs)
    m = load_member(out)
    assert m.kind == "ensemble" and set(m.tasks) == {"a", "r"}
    _, arrays = load_all([out])
    assert arrays["a"].score(arrays["a"].P[0])["accuracy"] == pytest.approx(metrics["tasks"]["a"]["accuracy"])


def test_existing_output_is_refused_and_replaced_only_with_overwrite(tmp_path: Path) -> None:
    members = two_fake_members(tmp_path)
    out = tmp_path / "ens"
    O.ensemble_command(members, out)
    with pytest.raises(
        MtfuseError, match=r"ens: already holds an output of `mtfuse ensemble`; pass --overwrite"
    ):
        O.ensemble_command(members, out, method="vote")
    assert json.loads((out / "ensemble.json").read_text())["method"] == "mean"
    O.ensemble_command(members, out, method="vote", overwrite=True)
    assert json.loads((out / "ensemble.json").read_text())["method"] == "vote"
    O.ensemble_command(members, out, method="stack", folds=2, overwrite=True)  # same family: a stack may
    assert json.loads((out / "ensemble.json").read_text())["method"] == "stack"
    # never replaces what is not an ensemble, even with --overwrite: a user's files, a training run
    with pytest.raises(MtfuseError, match="holds files that mtfuse did not write"):
        O.ensemble_command(members, members[0], overwrite=True)
    assert (members[0] / "model" / "heads.json").is_file()
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("tasks: []\n")
    with pytest.raises(MtfuseError, match="holds an output of `mtfuse train`"):
        O.ensemble_command(members, run, overwrite=True)
    assert (run / "config.yaml").is_file()
    no_partial_output(tmp_path / "never")


def test_a_tuned_ensemble_below_its_best_member_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Issue 15: under-confident members can make weighted_nll favour the worse member; say so."""
    rng = np.random.default_rng(0)
    n = 200
    gold = rng.integers(0, 2, n)
    good = np.where(rng.random(n) < 0.9, gold, 1 - gold)  # 90% right, but only 52% sure
    bad = np.where(rng.random(n) < 0.72, gold, 1 - gold)  # 72% right, 75% sure
    a = fake_run(tmp_path / "good", {"t": cls_task(np.where(good == 1, 0.52, 0.48), gold)})
    b = fake_run(tmp_path / "bad", {"t": cls_task(np.where(bad == 1, 0.75, 0.25), gold)})
    fusion = O.ensemble_command([a, b], tmp_path / "ens", method="weighted_nll", folds=5)
    members = [s["accuracy"] for s in fusion.tasks["t"].ta.member_scores()]
    assert fusion.tasks["t"].metrics["accuracy"] < max(members)
    err = capsys.readouterr().err
    assert (
        "warning: task 't': the tuned 'weighted_nll' ensemble scores" in err
        and "below its best member" in err
    )
    spec = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert len(spec["warnings"]) == 1 and str(a) in spec["warnings"][0]
    assert spec["tasks"]["t"]["warning"] == spec["warnings"][0]
    # an untuned method, or a tuned one that does not lose to a member, warns about nothing
    assert O.fuse([a, b], method="mean").warnings() == []
    fine = O.ensemble_command([a], tmp_path / "one", method="weighted_nll", folds=5)
    assert fine.warnings() == []


# ---------------------------------------------------------------------------------------- real runs


def close(a: Any, b: Any, tol: float = 2e-6) -> bool:
    """Nested dicts / lists of numbers equal within ``tol`` (other leaves exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= tol
    return bool(a == b)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("method", sorted(set(M.METHODS.names()) - {"stack"}))
def test_an_ensemble_of_one_member_equals_that_member(
    runs: dict[str, Path], tmp_path: Path, method: str
) -> None:
    out = tmp_path / "one"
    fusion = O.ensemble_command([runs["mt1"]], out, method=method)
    member_metrics = json.loads((runs["mt1"] / "metrics.json").read_text())["tasks"]
    assert set(fusion.tasks) == {"sst2", "stsb", "conll"}
    for task, f in fusion.tasks.items():
        assert f.metrics == pytest.approx(member_metrics[task], abs=1e-6)
        mine, theirs = (
            _records(out / "predictions" / f"{task}.jsonl"),
            _records(runs["mt1"] / "predictions" / f"{task}.jsonl"),
        )
        for a, b in zip(mine, theirs, strict=True):
            for key in ("index", "label", "score", "tags", "gold"):
                assert close(a.get(key), b.get(key))
            if method != "vote":  # a vote's "probabilities" are vote shares smoothed by the mean
                assert close(a.get("probs"), b.get("probs"))


def test_mean_ensemble_averages_members_word_by_word(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mean"
    O.ensemble_command([runs["mt1"], runs["mt2"]], out, method="mean")
    for task in ("sst2", "conll"):
        ens = _records(out / "predictions" / f"{task}.jsonl")
        m1 = _records(runs["mt1"] / "predictions" / f"{task}.jsonl")
        m2 = _records(runs["mt2"] / "predictions" / f"{task}.jsonl")
        for e, a, b in zip(ens, m1, m2, strict=True):
            if task == "conll":
                assert len(e["probs"]) == min(len(a["probs"]), len(b["probs"]))
                for we, wa, wb in zip(e["probs"], a["probs"], b["probs"], strict=False):
                    assert we == pytest.approx({k: (wa[k] + wb[k]) / 2 for k in wa}, abs=2e-6)
                    assert e["tags"][e["probs"].index(we)] == max(we, key=we.get)
            else:
                assert e["probs"] == pytest.approx(
                    {k: (a["probs"][k] + b["probs"][k]) / 2 for k in a["probs"]}, abs=2e-6
                )
    stsb = _records(out / "predictions" / "stsb.jsonl")
    s1, s2 = (
        _records(runs["mt1"] / "predictions" / "stsb.jsonl"),
        _records(runs["mt2"] / "predictions" / "stsb.jsonl"),
    )
    assert [r["score"] for r in stsb] == pytest.approx(
        [(a["score"] + b["score"]) / 2 for a, b in zip(s1, s2, strict=True)]
    )


def test_mixed_single_and_multi_task_members_share_their_common_task(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    fusion = O.ensemble_command(
        [runs["st"], runs["mt1"], runs["mt2"]],
        tmp_path / "mix",
        method="caruana",
        folds=3,
        console=Console(file=buf, width=150),
    )
    assert list(fusion.tasks) == ["sst2"]
    text = buf.getvalue()
    assert "member 3" in text and "out-of-fold" in text and "error correlation" in text
    assert json.loads((tmp_path / "mix" / "diversity.json").read_text())["tasks"]["sst2"]["units"] == 24
