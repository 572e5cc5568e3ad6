"""The quality-profile script as a module, for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "quality_profile.py"


@pytest.fixture(scope="module")
def qp():
    """The script as a module (benchmarks/ is no package), under a name of its own."""
    spec = importlib.util.spec_from_file_location("quality_profile_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
