"""Fixtures of the merge tests: tiny hand-made runs (not trained), one intra-op thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.fusion import make_data_runs


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """Hand-made runs of three tasks (``tests.helpers.fusion.make_data_runs``); a module may override it."""
    return make_data_runs(tmp_path_factory.mktemp("merge_data_runs"), tiny_model_dir)


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_thread: None) -> None:
    """Every merge test module runs with one intra-op thread (``one_thread`` in tests/conftest.py)."""
