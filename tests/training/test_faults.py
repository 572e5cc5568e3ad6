"""Faults while training: a full disk during a checkpoint, and the time-based checkpoint cadence."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import mtfuse.checkpoint as ckpt_mod
from mtfuse.checkpoint import step_dirs
from tests.helpers.cli import fails, run_cli

CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"}}
train: {batch_size: 8, max_steps: 6, tensorboard: false, progress: false, checkpoint_every: 2, eval_every: 6}
subset: {train: 32, eval: 8}
"""


@pytest.fixture
def cfg(cli_config) -> tuple[Path, list[str]]:
    return cli_config(CONFIG)


def test_full_disk_during_a_checkpoint_is_one_line_and_the_previous_checkpoint_resumes(
    cfg, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "run"
    real = ckpt_mod.save_model
    calls = {"n": 0}

    def full_disk_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 4
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(ckpt_mod, "save_model", full_disk_on_second)
    fails(
        ["train", cfg[0], "--output", out, *cfg[1]],
        "cannot write the checkpoint of step 4 (no space left on the device)",
        "step-0000002) is complete and usable",
    )
    assert [s for s, _ in step_dirs(out / "checkpoints")] == [2]
    assert not (out / "checkpoints" / ".tmp-step-0000004").exists()
    monkeypatch.setattr(ckpt_mod, "save_model", real)
    code, o, e = run_cli(["train", cfg[0], "--output", out, "--resume", *cfg[1]])
    assert code == 0, e
    assert (out / "metrics.json").is_file()


def test_time_based_checkpoints_bound_the_work_a_crash_loses(cfg, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # checkpoint_every far away; a tiny checkpoint_minutes: a checkpoint at every log step instead
    args = [
        "train.checkpoint_every=1000",
        "train.checkpoint_minutes=0.000001",
        "train.log_every=1",
        "train.keep_checkpoints=10",
    ]
    code, o, e = run_cli(["train", cfg[0], "--output", out, *cfg[1], *args])
    assert code == 0, e
    assert [s for s, _ in step_dirs(out / "checkpoints")] == [1, 2, 3, 4, 5, 6]
    out2 = tmp_path / "run2"
    code, o, e = run_cli(
        [
            "train",
            cfg[0],
            "--output",
            out2,
            *cfg[1],
            "train.checkpoint_every=1000",
            "train.checkpoint_minutes=null",
            "train.keep_checkpoints=10",
        ]
    )
    assert code == 0, e
    assert [s for s, _ in step_dirs(out2 / "checkpoints")] == [6]
