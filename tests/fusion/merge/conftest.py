"""Fixtures of the merge tests: tiny hand-made runs (not trained), one intra-op thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers.fusion import make_data_runs


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """Hand-made runs of three tasks (``tests.helpers.fusion.make_data_runs``); a module may override it."""
    return make_data_runs(tmp_path_factory.mktemp("merge_data_runs"), tiny_model_dir)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on busy shared cores: one intra-op thread avoids thread hand-off costs 100x the work."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
