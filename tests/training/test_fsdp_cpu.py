"""FSDP through accelerate on a machine without an accelerator: one clear error that says what to do instead,
never accelerate's traceback, and never a run that quietly trains with DDP or alone.

accelerate 1.x cannot shard on CPUs: with ``--use_fsdp`` its plugin raises (sync_module_states / efficient
CPU RAM loading, the launcher's defaults), and without those it makes a gloo DDP group (``cpu=True``) or one
process, under a launch that asked for FSDP."""

from __future__ import annotations

import pytest
import torch

from mtfuse.config import RunConfig
from mtfuse.errors import MtfuseError
from mtfuse.training.setup import make_accelerator


@pytest.mark.skipif(torch.cuda.is_available(), reason="FSDP runs where there is a GPU")
def test_fsdp_on_the_cpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RunConfig.model_validate(
        {"tasks": [{"name": "t", "type": "classification", "data": {"format": "jsonl"}}]}
    )
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    # the launcher's defaults: the plugin itself refuses
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "true")
    with pytest.raises(MtfuseError, match=r"FSDP .*needs a GPU.*accelerate launch --multi_gpu"):
        make_accelerator(cfg)
    # --fsdp_sync_module_states false --fsdp_cpu_ram_efficient_loading false: accelerate would not shard
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    with pytest.raises(MtfuseError, match=r"FSDP was asked for.*would run NO here.*--multi_gpu"):
        make_accelerator(cfg)
