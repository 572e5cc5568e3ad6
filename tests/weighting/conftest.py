"""Fixtures shared by the weighting tests: LibMTL, the reference implementation they compare against."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import pytest


@pytest.fixture(scope="module")
def libmtl() -> Any:
    """``LibMTL.weighting`` imported under a stub parent package (its ``__init__`` needs torchvision)."""
    spec = importlib.util.find_spec("LibMTL")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("LibMTL (libmtl==1.1.5) is not installed")
    saved = {k: v for k, v in sys.modules.items() if k == "LibMTL" or k.startswith("LibMTL.")}
    stub = types.ModuleType("LibMTL")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["LibMTL"] = stub
    try:
        return importlib.import_module("LibMTL.weighting")
    finally:
        for k in [k for k in sys.modules if k == "LibMTL" or k.startswith("LibMTL.")]:
            del sys.modules[k]
        sys.modules.update(saved)
