"""Prediction of new inputs through an ensemble's members and saved weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble import output as O
from mtfuse.fusion.ensemble.predictor import EnsemblePredictor


def test_ensemble_predictor_combines_the_members(runs: dict[str, Path], tmp_path: Path) -> None:
    from mtfuse.predict import Predictor

    out = tmp_path / "pred_ens"
    O.ensemble_command([runs["mt1"], runs["mt2"]], out, method="weighted_nll", folds=3)
    weights = json.loads((out / "ensemble.json").read_text())["tasks"]
    ep = EnsemblePredictor(out)
    p1, p2 = Predictor(runs["mt1"]), Predictor(runs["mt2"])
    rows = [{"sentence": "a gripping , funny film ."}, {"sentence": "dull and flat"}]
    got = ep.predict_rows("sst2", rows)
    w = weights["sst2"]["weights"]
    for r, a, b in zip(got, p1.predict_rows("sst2", rows), p2.predict_rows("sst2", rows), strict=True):
        assert r["probs"] == pytest.approx(
            {k: w[0] * a["probs"][k] + w[1] * b["probs"][k] for k in a["probs"]}, abs=2e-6
        )
        assert r["label"] == max(r["probs"], key=r["probs"].get)
    pairs = [{"sentence1": "A man plays a guitar.", "sentence2": "A man is playing music."}]
    (reg,) = ep.predict_rows("stsb", pairs)
    w = weights["stsb"]["weights"]
    expect = (
        w[0] * p1.predict_rows("stsb", pairs)[0]["score"] + w[1] * p2.predict_rows("stsb", pairs)[0]["score"]
    )
    assert reg["score"] == pytest.approx(expect, abs=1e-5)
    toks = ep.predict_rows(
        "conll", [{"tokens": ["EU", "rejects", "German", "call"]}, {"tokens": "Peter went"}]
    )
    assert [len(r["tags"]) for r in toks] == [4, 2] and toks[1]["tokens"] == ["Peter", "went"]
    assert all(set(w) == set(weights["conll"]["labels"]) for w in toks[0]["probs"])
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    assert ep.predict_file("sst2", src)[0]["probs"] == pytest.approx(got[0]["probs"])
    with pytest.raises(MtfuseError, match=r"unknown task 'cola'; this ensemble has \[sst2, stsb, conll\]"):
        ep.predict_rows("cola", rows)
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    spec = json.loads((moved / "ensemble.json").read_text())
    spec["members"][0]["path"] = str(tmp_path / "gone")
    (moved / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(MtfuseError, match="member run directory .*gone not found"):
        EnsemblePredictor(moved)
