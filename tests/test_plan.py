"""config -> plan: every check that needs no model runs before one is loaded, as one clear error (exit 2),
and the resolved parameters (defaults included) are what the run directory records."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtfuse import config as config_mod
from mtfuse.errors import ConfigError
from mtfuse.plan import STEP_JOINT_GRADIENT, STEP_JOINT_LOSS, STEP_SAMPLED, make_plan
from tests.helpers.cli import fails, run_cli

CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"}}
  - {name: stsb, type: regression, data: {format: glue, task: STS-B, path: "{data_dir}/glue/STS-B"}}
train: {batch_size: 8, max_steps: 2, tensorboard: false, progress: false}
subset: {train: 16, eval: 16}
"""


@pytest.fixture
def cfg(cli_config) -> tuple[Path, list[str]]:
    return cli_config(CONFIG)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.lr=-1", "train.lr"),
        ("train.grad_accum=0", "train.grad_accum"),
        ("train.log_every=0", "train.log_every"),
        ("train.eval_batch_size=0", "train.eval_batch_size"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.max_steps=-3", "train.max_steps"),
        ("train.epochs=0", "train.epochs"),
        ("train.eval_every=0", "train.eval_every"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints"),
        ("train.warmup_ratio=1.5", "train.warmup_ratio"),
        ("train.adam_betas=[0.9,1.2]", "train.adam_betas"),
        ("tasks.sst2.max_length=0", "max_length"),
        ("tasks.sst2.loss_weight=.nan", "loss_weight"),
        ("tasks.sst2.loss_weight=-1", "loss_weight"),
        ("subset.train=0", "subset.train"),
        ("model.head_dropout=1.5", "model.head_dropout"),
    ],
)
def test_values_that_make_no_sense_are_rejected_before_training(
    cfg, tmp_path: Path, override: str, field: str
) -> None:
    out = tmp_path / "run"
    fails(["train", cfg[0], "--output", out, *cfg[1], override], field)
    assert not out.exists()


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        (["tasks.sst2.metrics=[pearson]"], "metric 'pearson' does not fit task type 'classification'"),
        (["tasks.stsb.metrics=[accuracy]"], "metric 'accuracy' does not fit task type 'regression'"),
        (["tasks.sst2.max_length=941"], "max_length=941 is more than the encoder's 512 positions"),
        (["tasks.sst2=3"], "'tasks.sst2' is a task; give a mapping"),
        (["weighting.method=pcgrad"], "set train.step_mode=joint"),
        (["weighting.method=pcgrad", "train.step_mode=joint", "train.grad_accum=2"], "grad_accum must be 1"),
        (["train.joint_tasks=1"], "step_mode=joint only"),
        (["train.step_mode=joint", "train.joint_tasks=5"], "joint_tasks must be between 1"),
        (["tasks.sst2.text_fields=[a,b,c]"], "takes 1 or 2 text field(s), got 3"),
    ],
)
def test_cross_field_and_model_checks_are_one_clear_error(cfg, tmp_path: Path, overrides, text: str) -> None:
    out = tmp_path / "run"
    fails(["train", cfg[0], "--output", out, *cfg[1], *overrides], text)
    assert not out.exists()


def test_binary_f1_on_a_three_class_task_fails_before_training(cfg, tmp_path: Path) -> None:
    data = tmp_path / "three"
    data.mkdir()
    rows = "text,label\n" + "".join(f"sentence number {i},{'abc'[i % 3]}\n" for i in range(12))
    for split in ("train", "dev"):
        (data / f"{split}.csv").write_text(rows, encoding="utf-8")
    raw = yaml.safe_load(CONFIG)
    raw["tasks"] = [
        {
            "name": "three",
            "type": "classification",
            "metrics": ["f1"],
            "text_fields": ["text"],
            "label_field": "label",
            "data": {
                "format": "csv",
                "files": {"train": str(data / "train.csv"), "dev": str(data / "dev.csv")},
            },
        }
    ]
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    out = tmp_path / "run"
    fails(["train", path, "--output", out, *cfg[1]], "metric 'f1' needs two classes", "has 3")
    assert not out.exists()


def test_the_run_records_resolved_parameters(cfg, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, o, e = run_cli(
        ["train", cfg[0], "--output", out, *cfg[1], "train.step_mode=joint", "weighting.method=cagrad"]
    )
    assert code == 0, e
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["weighting"]["method"] == "cagrad" and "c" in saved["weighting"], saved["weighting"]
    assert saved["model"]["pooling"] == "pooler"  # the tiny test model has no sentence-transformers config
    assert "method" in saved["sampling"] and saved["model"]["sharing"]["method"] == "hard"
    again = config_mod.load(out / "config.yaml")  # reproducible from the file alone
    assert again.weighting.model_extra == config_mod.load(out / "config.yaml").weighting.model_extra


def test_plan_step_kinds(cfg) -> None:
    base = config_mod.load(cfg[0], cfg[1])
    assert make_plan(base).step == STEP_SAMPLED
    joint = config_mod.load(cfg[0], [*cfg[1], "train.step_mode=joint"])
    assert make_plan(joint).step == STEP_JOINT_LOSS
    grad = config_mod.load(cfg[0], [*cfg[1], "train.step_mode=joint", "weighting.method=upgrad"])
    assert make_plan(grad).step == STEP_JOINT_GRADIENT
    with pytest.raises(ConfigError, match="choose from"):
        config_mod.load(cfg[0], [*cfg[1], "weighting.method=nope"])


def test_data_check_reports_the_plan_and_encoder_checks(cfg) -> None:
    fails(
        ["data", "check", cfg[0], *cfg[1], "tasks.sst2.max_length=941"],
        "more than the encoder's 512 positions",
    )
    fails(["data", "check", cfg[0], *cfg[1], "weighting.method=pcgrad"], "set train.step_mode=joint")


def test_pooling_defaults_to_what_the_checkpoint_was_trained_with(cfg) -> None:
    packaged = config_mod.load(cfg[0], [*cfg[1], "model.name_or_path=default"])
    assert packaged.model.pooling == "mean"  # a sentence-transformers model trained with mean pooling
    tiny = config_mod.load(cfg[0], cfg[1])
    assert tiny.model.pooling == "pooler"  # no sentence-transformers files: the encoder's pooler
    chosen = config_mod.load(cfg[0], [*cfg[1], "model.name_or_path=default", "model.pooling=cls"])
    assert chosen.model.pooling == "cls"


def test_regression_heads_record_the_train_targets_scale(cfg, tmp_path: Path) -> None:
    import json

    out = tmp_path / "run"
    code, o, e = run_cli(["train", cfg[0], "--output", out, *cfg[1]])
    assert code == 0, e
    heads = {h["task"]: h for h in json.loads((out / "model" / "heads.json").read_text())["heads"]}
    assert "target_mean" not in heads["sst2"]
    assert 1.0 < heads["stsb"]["target_mean"] < 4.5 and 0.5 < heads["stsb"]["target_std"] < 2.5
    from mtfuse.model import MultiTaskModel

    model, _ = MultiTaskModel.load(out / "model")  # the loaded head answers on the targets' scale
    head = model.heads["stsb"]
    assert head.target_mean == heads["stsb"]["target_mean"] and head.target_std == heads["stsb"]["target_std"]
    assert model.heads["stsb"].loss_kwargs() == {"target_std": heads["stsb"]["target_std"]}
