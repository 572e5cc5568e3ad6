"""Predictor's precision and inference mode: fp32 (the default) gives what training's evaluation wrote, bf16
autocasts the model, auto keeps fp32 for value outputs and where the CPU has no native bf16."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import mtfuse.predict as predict_mod
from mtfuse.config import DataConfig
from mtfuse.errors import MtfuseError
from mtfuse.predict import Predictor
from mtfuse.serve import ServeSettings
from mtfuse.tasks.prepare import subset_rows
from tests.helpers.cli import fails, run_cli
from tests.helpers.serving import ok

CONFIG = """\
data_dir: {data}
tasks:
  - {{name: sst2, type: classification, data: {{format: glue, task: SST-2, path: "{{data_dir}}/glue/SST-2"}}}}
  - {{name: rte, type: pair_classification, data: {{format: glue, task: RTE, path: "{{data_dir}}/glue/RTE"}}}}
  - {{name: stsb, type: regression, data: {{format: glue, task: STS-B, path: "{{data_dir}}/glue/STS-B"}}}}
model: {{name_or_path: {model}, pooling: pooler}}
train: {{batch_size: 8, lr: 1.0e-3, max_steps: 3, tensorboard: false, progress: false}}
subset: {{train: 16, eval: 12}}
cache_dir: {cache}
"""
GLUE = {"sst2": "SST-2", "rte": "RTE", "stsb": "STS-B"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, shared_data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("predict_run")
    cfg = root / "cfg.yaml"
    text = CONFIG.format(data=shared_data_dir, model=tiny_model_dir, cache=root / "cache")
    cfg.write_text(text, encoding="utf-8")
    code, out, err = run_cli(["train", cfg, "--output", root / "run"])
    assert code == 0, out + err
    return root / "run"


def dev_rows(shared_data_dir: Path, task: str) -> list[dict[str, Any]]:
    """The dev rows training scored (subset.eval = 12, subset.seed 0)."""
    from mtfuse.tasks.readers import READERS

    data = DataConfig(format="glue", task=GLUE[task], path=str(shared_data_dir / "glue" / GLUE[task]))
    return subset_rows(READERS.get("glue").read(data, "dev"), 12, 0, task, "dev")


class Probe:
    """Records the dtype of the encoder's first Linear output and whether inference mode was on."""

    def __init__(self, predictor: Predictor) -> None:
        linear = next(m for m in predictor.model.encoder.modules() if isinstance(m, nn.Linear))
        self.seen: list[tuple[torch.dtype, bool]] = []
        linear.register_forward_hook(
            lambda mod, inp, out: self.seen.append((out.dtype, torch.is_inference_mode_enabled()))
        )

    def dtypes(self) -> set[torch.dtype]:
        out = {d for d, _ in self.seen}
        self.seen.clear()
        return out


def test_default_fp32_gives_what_evaluation_wrote(run: Path, shared_data_dir: Path) -> None:
    p = Predictor(run, device="cpu")
    assert p.precision == "fp32"
    probe = Probe(p)
    for task in ("sst2", "rte", "stsb"):
        recs = p.predict_rows(task, dev_rows(shared_data_dir, task))
        lines = (run / "predictions" / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
        written = [json.loads(line) for line in lines]
        assert len(recs) == len(written) == 12
        for got, want in zip(recs, written, strict=True):
            if task == "stsb":
                assert got["score"] == pytest.approx(want["score"], abs=1e-4)
            else:
                assert got["label"] == want["label"]
                assert got["probs"] == pytest.approx(want["probs"], abs=1e-4)
    assert probe.seen and all(d == torch.float32 and inference for d, inference in probe.seen)


def test_bf16_autocasts_every_task_in_inference_mode(run: Path, shared_data_dir: Path) -> None:
    p = Predictor(run, device="cpu", precision="bf16")
    assert p.precision == "bf16"
    probe = Probe(p)
    rows = dev_rows(shared_data_dir, "rte")
    for task in ("rte", "stsb"):
        recs = p.predict_rows(task, rows)
        assert probe.dtypes() == {torch.bfloat16}, task
        assert len(recs) == len(rows)
    recs = p.predict_rows("rte", rows)
    assert all(r["label"] in {"entailment", "not_entailment"} for r in recs)
    assert all(sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-4) for r in recs)
    both = p.predict_all(["rte", "stsb"], rows)  # one shared forward_all pass: bf16 too
    assert probe.dtypes() == {torch.bfloat16}
    assert all(inference for _, inference in probe.seen)
    assert set(both) == {"rte", "stsb"}


def test_auto_uses_bf16_only_for_label_decisions_on_native_cpus(
    run: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = dev_rows(shared_data_dir, "rte")
    monkeypatch.setattr(predict_mod, "native_cpu_bf16", lambda: False)
    assert Predictor(run, device="cpu", precision="auto").precision == "fp32"  # emulated bf16 is slower

    monkeypatch.setattr(predict_mod, "native_cpu_bf16", lambda: True)
    p = Predictor(run, device="cpu", precision="auto")
    assert p.precision == "auto"
    probe = Probe(p)
    p.predict_rows("rte", rows)
    assert probe.dtypes() == {torch.bfloat16}
    p.predict_rows("stsb", rows)  # a value, not a label: fp32
    assert probe.dtypes() == {torch.float32}
    p.predict_all(["rte"], rows)
    assert probe.dtypes() == {torch.bfloat16}
    # rte and stsb read the same pair encodings: one shared pass, fp32 because stsb needs it
    out = p.predict_all(["rte", "stsb"], rows)
    assert probe.dtypes() == {torch.float32}
    fp32 = Predictor(run, device="cpu").predict_rows("stsb", rows)
    assert [r["score"] for r in out["stsb"]] == [r["score"] for r in fp32]


def test_unknown_precision_is_refused_before_loading(run: Path, tmp_path: Path) -> None:
    with pytest.raises(MtfuseError, match=r"--precision 'fp16': choose from \[fp32, bf16, auto\]"):
        Predictor(run, device="cpu", precision="fp16")
    with pytest.raises(MtfuseError, match="--precision 'int8'"):
        ServeSettings(precision="int8").check()
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"sentence": "a fine film"}) + "\n", encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    fails(
        ["predict", run, "--task", "sst2", "--input", src, "--output", dst, "--precision", "x"],
        "--precision 'x'",
    )
    ok("predict", run, "--task", "sst2", "--input", src, "--output", dst, "--precision", "bf16")
    rec = json.loads(dst.read_text(encoding="utf-8"))
    assert rec["label"] in {"0", "1"} and set(rec["probs"]) == {"0", "1"}
