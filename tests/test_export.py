"""`mtfuse export --format onnx`: one graph for the encoder and every head, parity with torch in onnxruntime,
int8, the ONNX backend of the Predictor and the server, and the command's errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

from mtfuse import rundir
from mtfuse.export import AllHeads
from mtfuse.model import MultiTaskModel
from mtfuse.predict import Predictor, load_predictor
from mtfuse.serve import create_app
from tests.helpers.cli import fails
from tests.helpers.serving import INPUTS, NAMES, ok, serve_runs


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    runs = serve_runs(tmp_path_factory.mktemp("export_runs"), tiny_model_dir)
    out = ok("export", runs["run"], "--format", "onnx", "--quantize", "int8")
    assert "model.onnx" in out and "model.int8.onnx" in out
    return runs


def _batch(tokenizer, rows: int, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    words = "good bad film plot actor London Paris great dull scene story city".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 14)))) for _ in range(rows)]
    pairs = [" ".join(rng.choice(words, size=int(rng.integers(1, 6)))) for _ in range(rows)]
    return dict(tokenizer(texts, pairs, padding=True, return_tensors="pt"))


def test_export_directory(exported: dict[str, Path]) -> None:
    out = exported["run"] / rundir.ONNX
    meta = json.loads((out / rundir.EXPORT).read_text())
    assert meta["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    assert [o["name"] for o in meta["outputs"]] == list(NAMES)
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta["row_multiple"] == 3  # the multiple-choice head's choices
    assert rundir.owner(out) == "export"
    assert not [p for p in exported["run"].iterdir() if p.name.startswith(".onnx.tmp")]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    shapes = {o.name: o.shape for o in session.get_outputs()}
    assert set(shapes) == set(NAMES)
    assert isinstance(shapes["cls"][0], str) and shapes["cls"][1] == 2  # dynamic batch axis
    assert all(isinstance(d, str) for d in session.get_inputs()[0].shape)  # dynamic batch and sequence


def test_fp32_parity_with_torch(exported: dict[str, Path]) -> None:
    """max |logit difference| <= 1e-4 on batches of shapes other than the traced one."""
    model, tokenizer = MultiTaskModel.load(exported["run"] / rundir.MODEL)
    wrapper = AllHeads(model, model.tasks, ["input_ids", "attention_mask", "token_type_ids"]).eval()
    session = ort.InferenceSession(
        str(exported["run"] / rundir.ONNX / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    for rows, seed in ((3, 0), (12, 1), (30, 2)):
        batch = _batch(tokenizer, rows, seed)
        with torch.no_grad():
            ref = [
                t.numpy()
                for t in wrapper(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            ]
        got = session.run(model.tasks, {k: v.numpy() for k, v in batch.items()})
        for task, g, r in zip(model.tasks, got, ref, strict=True):
            assert g.shape == r.shape, task
            assert float(np.abs(g - r).max()) <= 1e-4, task


def test_int8_loads_and_mostly_agrees(exported: dict[str, Path]) -> None:
    model, tokenizer = MultiTaskModel.load(exported["run"] / rundir.MODEL)
    onnx_dir = exported["run"] / rundir.ONNX
    fp32 = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(onnx_dir / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    assert (onnx_dir / "model.int8.onnx").stat().st_size < (onnx_dir / "model.onnx").stat().st_size
    batch = {k: v.numpy() for k, v in _batch(tokenizer, 60, 3).items()}
    for task in ("cls", "pair", "multilabel"):
        a = fp32.run([task], batch)[0]
        b = int8.run([task], batch)[0]
        agree = float(np.mean(a.argmax(-1) == b.argmax(-1)))
        assert agree >= 0.8, (task, agree)


def test_onnx_backend_gives_the_same_records(exported: dict[str, Path]) -> None:
    torch_p = Predictor(exported["run"], device="cpu")
    onnx_p = Predictor(exported["run"], backend="onnx")
    int8_p = Predictor(exported["run"], backend="onnx-int8")
    for task in NAMES:
        rows = [dict(INPUTS[task]), dict(INPUTS[task])]
        a, b = torch_p.predict_rows(task, rows), onnx_p.predict_rows(task, rows)
        assert len(int8_p.predict_rows(task, rows)) == 2
        for ra, rb in zip(a, b, strict=True):
            assert ra.keys() == rb.keys(), task
            if "score" in ra:
                assert abs(ra["score"] - rb["score"]) < 1e-4
            else:
                assert ra.get("label", ra.get("labels", ra.get("tags"))) == rb.get(
                    "label", rb.get("labels", rb.get("tags"))
                ), task
    # one row of a multiple-choice task (3 sequences) in a batch with other heads: padded rows are dropped
    row = {k: v for x in INPUTS.values() for k, v in x.items()}
    both = onnx_p.predict_all(list(NAMES), [row])
    assert set(both) == set(NAMES) and all(len(v) == 1 for v in both.values())


def test_serve_onnx_backend_and_ensemble_through_members_exports(exported: dict[str, Path]) -> None:
    app = create_app(load_predictor(exported["run"], backend="onnx"))
    with TestClient(app) as c:
        assert c.get("/v1/tasks").json()["backend"] == "onnx"
        r = c.post("/v1/predict", json={"task": "cls", "inputs": ["good film"]})
        assert r.status_code == 200
        assert r.json()["predictions"] == Predictor(exported["run"], backend="onnx").predict_rows(
            "cls", [{"text": "good film"}]
        )
    # an ensemble served on onnx needs each member exported
    fails(["serve", exported["ensemble"], "--backend", "onnx", "--port", "0"], "no ONNX export")


def test_stale_export_is_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(exported["run"], copy)
    heads = copy / rundir.MODEL / "heads.safetensors"
    heads.write_bytes(heads.read_bytes()[:-4] + b"\0\0\0\0")  # the model changed after the export
    with pytest.raises(Exception, match="older than the run's model"):
        Predictor(copy, backend="onnx")


def test_export_errors(exported: dict[str, Path], tmp_path: Path) -> None:
    fails(["export", tmp_path / "nope"], "no such directory")
    (tmp_path / "empty").mkdir()
    fails(["export", tmp_path / "empty"], "not a run directory")
    fails(["export", exported["run"], "--format", "tflite"], "--format 'tflite'", "onnx")
    fails(["export", exported["run"], "--quantize", "int4"], "--quantize 'int4'", "int8")
    fails(["export", exported["run"]], "already holds an output of `mtfuse export`", "--overwrite")
    fails(["export", exported["ensemble"]], "ensemble or stack directory has no model")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    fails(["export", exported["run"], "--output", tmp_path / "mine"], "files that mtfuse did not write")
