"""Fixtures of the ensemble tests: tiny real runs trained once per session (shared with test_compare)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.fusion import trained_runs


@pytest.fixture(scope="session")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, shared_data_dir: Path
) -> dict[str, Path]:
    return trained_runs(tmp_path_factory.getbasetemp() / "fusion_runs", tiny_model_dir, shared_data_dir)
