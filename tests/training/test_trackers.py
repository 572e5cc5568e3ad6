"""Experiment tracking through accelerate's trackers (``train.log_with``): TensorBoard by default, others by
config alone; a tracker that is not installed is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtfuse.config import from_dict
from mtfuse.errors import ConfigError
from tests.helpers.cli import fails, run_cli

CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"}}
  - {name: stsb, type: regression, data: {format: glue, task: STS-B, path: "{data_dir}/glue/STS-B"}}
train: {batch_size: 8, max_steps: 4, eval_every: 2, progress: false}
subset: {train: 16, eval: 16}
"""


def tb_tags(run: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_by_default_through_accelerate(cli_config, tmp_path: Path) -> None:
    path, common = cli_config(CONFIG)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", path, *common, "train.log_every=2", "--output", run])
    assert code == 0, err
    tags = tb_tags(run)
    assert tags["loss/sst2"] == [2, 4] or tags["loss/stsb"] == [2, 4]  # one task a step (sampled)
    assert tags["dev/average"] == [2, 4] and tags["dev/stsb/pearson"] == [2, 4]
    assert tags["sampling/sst2"] == [2, 4] and tags["weights/stsb"] == [2, 4]
    assert tags["conflict/sst2-stsb"] == [2, 4]  # the gradient cosine of each evaluation


def test_no_tracker_and_bad_trackers(cli_config, tmp_path: Path) -> None:
    path, common = cli_config(CONFIG)
    run = tmp_path / "quiet"
    code, _, err = run_cli(["train", path, *common, "train.log_with=[]", "--output", run])
    assert code == 0, err
    assert (run / "log.jsonl").is_file() and not (run / "tb").exists()
    fails(
        ["train", path, *common, "train.log_with=[tensorbored]", "--output", tmp_path / "x"],
        "unknown tracker",
    )
    # a tracker whose package is missing: refused before the run directory is made
    missing = "wandb" if _absent("wandb") else "swanlab" if _absent("swanlab") else None
    if missing is None:
        pytest.skip("every tracker package this test could use is installed")
    fails(
        ["train", path, *common, f"train.log_with=[{missing}]", "--output", tmp_path / "y"], "not installed"
    )
    assert not (tmp_path / "y").exists()


def test_log_with_is_validated_and_deduplicated() -> None:
    base = {"tasks": [{"name": "a", "type": "classification", "data": {"format": "glue", "task": "SST-2"}}]}
    cfg = from_dict({**base, "train": {"log_with": ["tensorboard", "wandb", "tensorboard"]}})
    assert cfg.train.log_with == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="unknown tracker"):
        from_dict({**base, "train": {"log_with": ["nope"]}})


def _absent(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is None
