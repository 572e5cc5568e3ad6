"""Damaged run directories (issue 15's third class of cases): evaluate and predict give one clear error that
names what is damaged, exit 2, no traceback, and write nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.cli import fails, run_cli, snapshot

CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"}}
train: {batch_size: 8, max_steps: 2, tensorboard: false, progress: false}
subset: {train: 16, eval: 16}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, shared_data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    (root / "c.yaml").write_text(CONFIG, encoding="utf-8")
    argv = [
        "train",
        root / "c.yaml",
        "--output",
        root / "run",
        f"model.name_or_path={tiny_model_dir}",
        f"data_dir={shared_data_dir}",
        f"cache_dir={root / 'cache'}",
    ]
    code, o, e = run_cli(argv)
    assert code == 0, e
    (root / "in.jsonl").write_text('{"sentence": "a good film"}\n', encoding="utf-8")
    return root


def _truncate(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:n])


DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "no model folder": (lambda d: shutil.rmtree(d / "model"), "not a model directory"),
    "truncated heads": (
        lambda d: _truncate(d / "model" / "heads.safetensors", 100),
        "heads.safetensors: not a readable",
    ),
    "truncated encoder": (
        lambda d: _truncate(d / "model" / "model.safetensors", 1000),
        "could not load the encoder",
    ),
    "heads.json not JSON": (
        lambda d: (d / "model" / "heads.json").write_text("{not json"),
        "heads.json: not valid JSON",
    ),
    "heads.json without task_type": (
        lambda d: (d / "model" / "heads.json").write_text(
            json.dumps({"format_version": 1, "heads": [{"task": "sst2"}]})
        ),
        "field 'task_type'",
    ),
    "config.yaml not YAML": (
        lambda d: (d / "config.yaml").write_text("tasks: [\n"),
        "config.yaml:2: not valid YAML",
    ),
    "no config.yaml": (lambda d: (d / "config.yaml").unlink(), "not a run directory (no config.yaml)"),
    "no tokenizer": (
        lambda d: [
            p.unlink()
            for p in (d / "model").iterdir()
            if p.name.startswith(("tokenizer", "vocab", "special"))
        ],
        "no tokenizer files",
    ),
    "encoder config not JSON": (
        lambda d: (d / "model" / "config.json").write_text("{"),
        "could not load the encoder",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_run_is_one_clear_error(trained: Path, tmp_path: Path, case: str) -> None:
    damage, text = DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    damage(run)
    before = snapshot(run)
    fails(["evaluate", run, "--split", "dev", "subset.eval=8"], text)
    out = tmp_path / "pred.jsonl"
    fails(["predict", run, "--task", "sst2", "--input", trained / "in.jsonl", "--output", out], text)
    assert not out.exists()
    assert snapshot(run) == before
