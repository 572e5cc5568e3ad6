"""Crash and resume: a training process SIGKILLed mid-run (after an optimizer step, or in the middle of
writing a checkpoint) and resumed with ``--resume`` ends with the same weights, bit for bit, as an
uninterrupted run.

Every run is a real ``python -m mtfuse.cli train`` subprocess on the CPU: the tiny random BERT (dropout on),
small subsets of CoLA, STS-B and CoNLL-2003, 12 steps, a checkpoint every 4 steps. The kill comes from
``mtfuse.checkpoint.fault_point`` (env ``MTFUSE_FAULT``), which SIGKILLs the process at a named point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

MAX_STEPS = 12
CHECKPOINT_EVERY = 4
WEIGHT_FILES = ("model/model.safetensors", "model/heads.safetensors")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, shared_data_dir: Path) -> Path:
    """A folder holding the run config (and the tokenisation cache, so that ~/.cache is never touched)."""
    work = tmp_path_factory.mktemp("resume")
    data = "{data_dir}"
    cfg = {
        "data_dir": str(shared_data_dir),
        "cache_dir": str(work / "cache"),
        "model": {"name_or_path": str(tiny_model_dir)},  # dropout 0.1 in the encoder and the heads
        "tasks": [
            {
                "name": "cola",
                "type": "classification",
                "metrics": ["matthews"],
                "data": {"format": "glue", "task": "CoLA", "path": f"{data}/glue/CoLA"},
            },
            {
                "name": "stsb",
                "type": "regression",
                "data": {"format": "glue", "task": "STS-B", "path": f"{data}/glue/STS-B"},
            },
            {
                "name": "conll",
                "type": "token_classification",
                "data": {"format": "conll", "path": f"{data}/conll2003"},
            },
        ],
        "subset": {"train": 48, "eval": 16},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": 8,
            "lr": 1e-3,
            "checkpoint_every": CHECKPOINT_EVERY,
            "eval_every": 4,
            "log_every": 3,  # not a divisor of checkpoint_every: a resume starts between two log records
            "tensorboard": True,
            "progress": False,
            "cpu": True,
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return work


class Run:
    """A started ``mtfuse train`` process. Output goes to files, not pipes: parallel runs never block."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.out, stderr=self.err)

    def finish(self) -> subprocess.CompletedProcess[str]:
        try:
            self.proc.wait(timeout=300)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        texts = []
        for f in (self.out, self.err):
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
            f.close()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, *texts)


def start_cli(work: Path, out: Path, *extra: str, fault: str | None = None) -> Run:
    """``fault``: ``POINT`` (SIGKILL there) or ``POINT@SIG`` (send SIGINT / SIGTERM there)."""
    env = dict(os.environ)
    env.pop("MTFUSE_FAULT", None)
    env.pop("MTFUSE_FAULT_SIGNAL", None)
    if fault is not None:
        point, _, sig = fault.partition("@")
        env["MTFUSE_FAULT"] = point
        if sig:
            env["MTFUSE_FAULT_SIGNAL"] = sig
    # One thread: fast and steady on a shared 2-core machine, and every run of the comparison uses the same
    # reduction order (fp32 sums are not associative: the thread count changes the last bits).
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    config = str(work / "config.yaml")
    return Run([sys.executable, "-m", "mtfuse.cli", "train", config, "--output", str(out), *extra], env)


def run_cli(work: Path, out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    return start_cli(work, out, *extra, fault=fault).finish()


def outputs(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, outputs(proc)


def killed(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == -signal.SIGKILL, f"expected a SIGKILL\n{outputs(proc)}"


def log_records(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if ln]


def assert_same_as_reference(run: Path, ref: Path) -> None:
    for name in WEIGHT_FILES:
        got, want = load_file(str(run / name)), load_file(str(ref / name))
        assert sorted(got) == sorted(want), name
        differ = [k for k in want if not torch.equal(got[k], want[k])]
        assert not differ, f"{name}: {len(differ)} tensors differ from the uninterrupted run: {differ[:3]}"
    assert json.loads((run / "metrics.json").read_text()) == json.loads((ref / "metrics.json").read_text())

    recs = log_records(run)
    keys = [(r["step"], r.get("event", "train")) for r in recs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    assert not dup, f"log.jsonl repeats records after the resume: {dup}"
    assert {s for s, e in keys if e == "train"} == set(range(3, MAX_STEPS + 1, 3))
    # the resumed run logs what the uninterrupted run logged (losses averaged over the same steps included)
    assert recs == log_records(ref)
    # and TensorBoard, which hides the purged events of the killed run, shows the uninterrupted run's scalars
    assert tb_scalars(run) == tb_scalars(ref)


def tb_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


FIRST_RUNS = {
    "reference": None,
    "killed-step-7": "step:7",
    "killed-checkpoint-8": "checkpoint-write:8",
    "sigint-step-5": "step:5@INT",  # Ctrl-C between two checkpoints
    "sigterm-step-2": "step:2@TERM",  # a scheduler's SIGTERM before the first checkpoint
    "killed-step-10": "step:10",  # then its newest checkpoint is damaged
}
# joint steps with a stateful gradient method (MoCo keeps per-task gradient estimates: tensor state in the
# checkpoint) over soft sharing (per-task layer copies and their penalty): all of it must resume exactly
JOINT = (
    "train.step_mode=joint",
    "weighting.method=moco",
    "model.sharing.method=soft",
    "model.sharing.penalty=0.1",
)
JOINT_RUNS = {"joint-reference": None, "joint-killed-step-7": "step:7"}


@pytest.fixture(scope="module")
def first_runs(workdir: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """The uninterrupted runs and the runs to kill: independent, so they run side by side (2 cores)."""
    runs = {name: start_cli(workdir, workdir / name, fault=fault) for name, fault in FIRST_RUNS.items()}
    runs |= {
        name: start_cli(workdir, workdir / name, *JOINT, fault=fault) for name, fault in JOINT_RUNS.items()
    }
    return {name: run.finish() for name, run in runs.items()}


@pytest.fixture(scope="module")
def reference(workdir: Path, first_runs: dict[str, subprocess.CompletedProcess[str]]) -> Path:
    ok(first_runs["reference"])
    return workdir / "reference"


def test_sigkill_after_a_step_then_resume_matches_uninterrupted_run(
    workdir: Path, first_runs: dict[str, subprocess.CompletedProcess[str]], reference: Path
) -> None:
    out = workdir / "killed-step-7"
    killed(first_runs["killed-step-7"])
    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-0000004"
    assert not (out / "model").exists() and not (out / "metrics.json").exists()
    assert max(r["step"] for r in log_records(out)) == 6  # killed before step 7 was logged

    ok(run_cli(workdir, out, "--resume"))
    assert_same_as_reference(out, reference)


def test_joint_gradient_method_and_soft_sharing_resume_exactly(
    workdir: Path, first_runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    ok(first_runs["joint-reference"])
    out = workdir / "joint-killed-step-7"
    killed(first_runs["joint-killed-step-7"])
    assert (out / "checkpoints" / "step-0000004" / "extra.safetensors").is_file()  # MoCo's tensor state
    ok(run_cli(workdir, out, "--resume"))
    assert_same_as_reference(out, workdir / "joint-reference")
    assert (out / "model" / "sharing.json").is_file()


def test_sigkill_during_checkpoint_write_then_resume_matches_uninterrupted_run(
    workdir: Path, first_runs: dict[str, subprocess.CompletedProcess[str]], reference: Path
) -> None:
    out = workdir / "killed-checkpoint-8"
    killed(first_runs["killed-checkpoint-8"])
    ckpts = out / "checkpoints"
    assert (ckpts / ".tmp-step-0000008").is_dir()  # the kill did land in the middle of the write
    assert not (ckpts / "step-0000008").exists()
    assert (ckpts / "latest").read_text().strip() == "step-0000004"
    assert (ckpts / "step-0000004" / "COMPLETE").is_file()

    ok(run_cli(workdir, out, "--resume"))
    assert_same_as_reference(out, reference)
    assert not (ckpts / ".tmp-step-0000008").exists()
    assert (ckpts / "latest").read_text().strip() == f"step-{MAX_STEPS:07d}"


def test_resume_without_a_checkpoint_is_a_one_line_error(workdir: Path) -> None:
    empty = workdir / "no-checkpoint-at-all"
    empty.mkdir()
    # as if killed while writing the first checkpoint: only a temporary folder, `latest` names no COMPLETE one
    incomplete = workdir / "no-complete-checkpoint"
    tmp = incomplete / "checkpoints" / ".tmp-step-0000004"
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"")
    (incomplete / "checkpoints" / "latest").write_text("step-0000004\n")

    runs = [start_cli(workdir, out, "--resume") for out in (empty, incomplete)]  # side by side
    for proc in [run.finish() for run in runs]:
        assert proc.returncode == 2, outputs(proc)
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
        assert "resume" in lines[0]
    assert not (empty / "checkpoints").exists() and not (empty / "config.yaml").exists()  # nothing written


@pytest.mark.parametrize(("name", "step"), [("sigint-step-5", 5), ("sigterm-step-2", 2)])
def test_sigint_and_sigterm_checkpoint_the_current_step_and_exit_130(
    workdir: Path,
    first_runs: dict[str, subprocess.CompletedProcess[str]],
    reference: Path,
    name: str,
    step: int,
) -> None:
    proc, out = first_runs[name], workdir / name
    assert proc.returncode == 130, outputs(proc)
    assert f"interrupted at step {step}; resume with --resume" in proc.stderr, outputs(proc)
    assert "Traceback" not in proc.stderr
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{step:07d}"
    ok(run_cli(workdir, out, "--resume"))
    assert_same_as_reference(out, reference)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(
    workdir: Path, first_runs: dict[str, subprocess.CompletedProcess[str]], reference: Path
) -> None:
    out = workdir / "killed-step-10"
    killed(first_runs["killed-step-10"])
    newest = out / "checkpoints" / "step-0000008" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])  # a truncated file (a full disk, a bad copy)
    proc = run_cli(workdir, out, "--resume")
    ok(proc)
    assert "step-0000008 cannot be read" in proc.stdout and "resuming from step-0000004" in proc.stdout, (
        outputs(proc)
    )
    assert_same_as_reference(out, reference)
