"""The benchmark scripts as modules, for their tests (benchmarks/ is no package)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(filename: str) -> Iterator[ModuleType]:
    """``benchmarks/<filename>`` imported under a name of its own, removed from ``sys.modules`` afterwards."""
    name = f"{Path(filename).stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def qp() -> Iterator[ModuleType]:
    """benchmarks/quality_profile.py."""
    yield from load_script("quality_profile.py")


def smoke_sets(tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path, steps: int) -> list[str]:
    """The ``--set`` overrides of a tiny quality-profile smoke run: the tiny model, 16 examples, ``steps`` steps."""
    return [
        f"model.name_or_path={tiny_model_dir}",
        f"data_dir={shared_data_dir}",
        f"cache_dir={tmp_path / 'cache'}",
        "subset.train=16",
        "subset.eval=16",
        f"train.max_steps={steps}",
    ]
