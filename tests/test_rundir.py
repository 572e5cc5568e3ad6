"""The run-directory contract (mtfuse.rundir): nothing a user has is lost or overwritten.

Issue 15 section 1, each case reproduced: --overwrite with a late failure, evaluate --output onto a run,
train into a folder of the user's files, two processes on one output; and the rules themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mtfuse import rundir
from mtfuse.errors import MtfuseError
from tests.helpers.cli import fails, run_cli, snapshot

CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"}}
train: {batch_size: 8, max_steps: 2, tensorboard: false, progress: false}
subset: {train: 16, eval: 16}
"""


@pytest.fixture
def cfg(cli_config) -> tuple[Path, list[str]]:
    return cli_config(CONFIG)


def train_ok(cfg: tuple[Path, list[str]], out: Path, *extra: str) -> None:
    code, o, e = run_cli(["train", cfg[0], "--output", out, *cfg[1], *extra])
    assert code == 0, f"{o}\n{e}"


def test_overwrite_with_a_late_failure_keeps_the_old_run(cfg, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    train_ok(cfg, out)
    before = snapshot(out)

    import mtfuse.training.evaluation as ev

    def boom(*a, **k):
        raise MtfuseError("evaluation failed (a fault injected by the test)")

    monkeypatch.setattr(ev, "evaluate_tasks", boom)
    fails(["train", cfg[0], "--output", out, "--overwrite", *cfg[1], "train.seed=7"], "evaluation failed")
    assert snapshot(out) == before  # the old run is back, byte for byte
    assert not (out / rundir.PREVIOUS).exists()


def test_overwrite_replaces_a_run_when_the_new_one_succeeds(cfg, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_ok(cfg, out)
    train_ok(cfg, out, "--overwrite", "train.seed=7")
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == 7
    assert not (out / rundir.PREVIOUS).exists()


def test_schema_errors_come_before_anything_is_removed(cfg, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_ok(cfg, out)
    before = snapshot(out)
    fails(
        ["train", cfg[0], "--output", out, "--overwrite", *cfg[1], "train.eval_batch_size=0"],
        "eval_batch_size",
    )
    assert snapshot(out) == before


def test_train_refuses_a_folder_of_the_users_files(cfg, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("keep me")
    before = snapshot(out)
    for extra in ([], ["--overwrite"]):
        fails(["train", cfg[0], "--output", out, *extra, *cfg[1]], "files that mtfuse did not write")
    assert snapshot(out) == before


def test_evaluate_output_onto_the_run_is_refused(cfg, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_ok(cfg, out)
    before = snapshot(out)
    fails(["evaluate", out, "--output", out], "is a directory")
    fails(["evaluate", out, "--output", out / "config.yaml"], "contract")
    fails(["evaluate", out, "--output", out / "model" / "x.json"], "contract")
    assert snapshot(out) == before
    code, o, e = run_cli(["evaluate", out, "--split", "dev"])
    assert code == 0, e
    metrics = json.loads((out / "metrics-dev.json").read_text())
    assert metrics["examples"] == {"sst2": 872}  # the whole dev split, not the training config's subset
    assert "examples scored (dev): sst2: 872" in o


def test_a_second_process_on_the_same_output_fails_fast(cfg, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with rundir.lock(out):  # as another process would hold it
        import os

        err = fails(["train", cfg[0], "--output", out, *cfg[1]], "another mtfuse process")
        assert f"pid {os.getpid()}" in err
    assert not (out / "config.yaml").exists()
    train_ok(cfg, out)  # released: the run goes ahead


def test_lock_is_exclusive_and_released() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "x"
        with rundir.lock(out):
            with pytest.raises(MtfuseError, match="another mtfuse process"):
                with rundir.lock(out):
                    pass
        with rundir.lock(out):
            pass


def test_only_an_output_of_the_same_command_is_replaced(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("x")
    rundir.mark(run, "train")
    for cmd in ("merge", "ensemble", "stack", "compare"):
        with pytest.raises(MtfuseError, match="an output of `mtfuse train`"):
            rundir.check_output(run, cmd, overwrite=True)
    with pytest.raises(MtfuseError, match="pass --resume"):
        rundir.check_output(run, "train", overwrite=False)
    rundir.check_output(run, "train", overwrite=True)
    rundir.check_output(tmp_path / "new", "merge", overwrite=False)
    (tmp_path / "empty").mkdir()
    rundir.check_output(tmp_path / "empty", "merge", overwrite=False)


def test_atomic_writer_leaves_the_old_output_when_filling_fails(tmp_path: Path) -> None:
    out = tmp_path / "ens"
    rundir.write_dir_atomic(out, "ensemble", False, lambda d: (d / "a.json").write_text("1"))
    assert rundir.owner(out) == "ensemble"

    def bad(d: Path) -> None:
        (d / "a.json").write_text("2")
        raise MtfuseError("fill failed")

    with pytest.raises(MtfuseError, match="fill failed"):
        rundir.write_dir_atomic(out, "ensemble", True, bad)
    assert (out / "a.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ens"]


@pytest.mark.parametrize("name", ["../../x/escaped", "/abs", "a/b", "..", "", "x" * 300, 3])
def test_names_built_from_data_stay_inside(name: object) -> None:
    with pytest.raises(MtfuseError, match="not allowed"):
        rundir.check_name(name, "heads.json")


def test_inside_refuses_escapes(tmp_path: Path) -> None:
    assert rundir.inside(tmp_path, "a", "b.json") == tmp_path / "a" / "b.json"
    with pytest.raises(MtfuseError, match="outside"):
        rundir.inside(tmp_path, "..", "x.json")
