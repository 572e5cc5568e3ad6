"""Training precision: what ``train.precision: auto`` resolves to, bf16 autocast training end to end on the CPU,
and the switch to eager attention that bf16 on a CPU gets (``training.setup.cpu_bf16_attention``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModel

from mtfuse.config import from_dict
from mtfuse.training.setup import cpu_bf16_attention, train_precision
from tests.helpers.cli import run_cli

CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"}}
  - {name: conll, type: token_classification, data: {format: conll, path: "{data_dir}/conll2003"}}
train: {batch_size: 8, max_steps: 4, eval_every: 4, progress: false, tensorboard: false}
subset: {train: 16, eval: 16}
"""


def _cfg(**train: object):
    return from_dict(
        {
            "tasks": [{"name": "a", "type": "classification", "data": {"format": "jsonl", "path": "x"}}],
            "train": train,
        }
    )


def test_auto_is_bf16_on_a_cpu_with_native_bf16_else_fp32_and_an_explicit_choice_is_kept(monkeypatch) -> None:
    import mtfuse.training.setup as setup_mod

    monkeypatch.setattr(setup_mod.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(setup_mod, "native_cpu_bf16", lambda: True)
    assert train_precision(_cfg(cpu=True)) == "bf16"
    assert train_precision(_cfg(cpu=True, precision="no")) == "no"
    monkeypatch.setattr(setup_mod, "native_cpu_bf16", lambda: False)  # emulated bf16 is slower than fp32
    assert train_precision(_cfg(cpu=True)) == "no"
    assert train_precision(_cfg(cpu=True, precision="bf16")) == "bf16"
    assert train_precision(_cfg(precision="no")) == "no"


def _fake_acc(device: str, precision: str) -> SimpleNamespace:
    return SimpleNamespace(device=torch.device(device), mixed_precision=precision)


def test_bf16_on_the_cpu_switches_sdpa_to_eager_with_the_same_outputs(tiny_model_dir: Path) -> None:
    sdpa = AutoModel.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    eager = AutoModel.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    wrapper = torch.nn.ModuleDict({"encoder": eager})

    assert cpu_bf16_attention(wrapper, _fake_acc("cpu", "no")) == []  # fp32: left alone
    assert cpu_bf16_attention(wrapper, _fake_acc("cuda", "bf16")) == []  # a GPU's bf16 kernels are fast
    assert eager.config._attn_implementation == "sdpa"

    assert cpu_bf16_attention(wrapper, _fake_acc("cpu", "bf16")) == ["encoder"]
    assert eager.config._attn_implementation == "eager"
    assert cpu_bf16_attention(wrapper, _fake_acc("cpu", "bf16")) == []  # already eager
    ids = torch.randint(1000, 5000, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding must be masked the same way in both
    with torch.no_grad():
        a = sdpa(input_ids=ids, attention_mask=mask).last_hidden_state
        b = eager(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_bf16_training_on_the_cpu_runs_records_bf16_and_saves_a_plain_model(
    cli_config, tmp_path: Path
) -> None:
    path, common = cli_config(CONFIG)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", path, *common, "train.precision=bf16", "--output", run])
    assert code == 0, err
    results = json.loads((run / "results.json").read_text())
    assert results["cost"]["precision"] == "bf16"
    metrics = json.loads((run / "metrics.json").read_text())["tasks"]
    assert set(metrics) == {"sst2", "conll"}
    assert all(v == v for m in metrics.values() for v in m.values())  # no NaN from bf16
    # the final scores are fp32's: `mtfuse evaluate` (fp32) gives metrics.json exactly
    code, _, err = run_cli(["evaluate", run, "subset.eval=16", "--output", tmp_path / "again.json"])
    assert code == 0, err
    assert json.loads((tmp_path / "again.json").read_text())["tasks"] == metrics
    for task in ("sst2", "conll"):  # and the same probabilities (bf16's would differ in the 3rd digit)
        trained = (run / "predictions" / f"{task}.jsonl").read_text()
        assert trained == (run / "predictions" / "dev" / f"{task}.jsonl").read_text()
    # the eager switch is not saved: the encoder reloads with transformers' default attention
    saved = json.loads((run / "model" / "config.json").read_text())
    assert not any("attn" in k for k in saved)
    assert AutoModel.from_pretrained(run / "model").config._attn_implementation == "sdpa"
    # and fp32 again in the same process: accelerate's state from the bf16 run must not refuse it
    code, _, err = run_cli(["train", path, *common, "train.precision=no", "--output", tmp_path / "fp32"])
    assert code == 0, err
    assert json.loads((tmp_path / "fp32" / "results.json").read_text())["cost"]["precision"] == "no"
