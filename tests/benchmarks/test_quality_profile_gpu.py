"""benchmarks/quality_profile.py: the GPU profile end to end at tiny size on the CPU (a smoke run through the
mtfuse CLI), and the CPU profile's paths, names and records unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.benchmarks.conftest import smoke_sets

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {  # every row of the profile's table
    "single-task",
    "mtl-equal",
    "mt-dnn",
    "mt-dnn merged",
    "merge-ta",
    "merge-ties",
    "merge-regmean",
    "ensemble (caruana)",
    "ensemble (bagged caruana)",
    "ensemble (weighted nll)",
    "stack",
}


def test_cpu_profile_unchanged(qp) -> None:
    cpu = qp.profile_of(qp.parser().parse_args(["run", "--seed", "1"]))
    assert cpu == qp.CPU == qp.PROFILES["cpu"]
    assert cpu.config == ROOT / "benchmarks" / "quality_profile.yaml" == qp.CONFIG
    assert cpu.work == ROOT / "benchmarks" / "runs" / "quality" == qp.WORK
    assert cpu.result("-s1") == ROOT / "benchmarks" / "results" / "quality_profile-s1.json"
    assert cpu.result("-merges-s1").name == "quality_profile-merges-s1.json"
    assert cpu.result("").name == "quality_profile.json"
    assert cpu.merges() == qp.MERGES and "--search-space" in qp.MERGES["merge-ta"]
    assert (
        qp.common(1) == ["train.seed=1"] and qp.profile_record(cpu) == {}
    )  # the same argv, the same JSON keys
    args = qp.parser().parse_args(["run", "--seed", "1"])
    assert qp.run_command(args, cpu) == "benchmarks/quality_profile.py run --seed 1"


def test_gpu_profile_names(qp, tmp_path: Path) -> None:
    gpu = qp.profile_of(qp.parser().parse_args(["--profile", "gpu", "run", "--seed", "2"]))
    assert gpu.work == ROOT / "benchmarks" / "runs" / "quality-gpu"
    assert gpu.result("-s2") == ROOT / "benchmarks" / "results" / "quality_profile_gpu-s2.json"
    assert gpu.result("").name == "quality_profile_gpu.json"
    assert gpu.result("-merges-s2").name == "quality_profile_gpu-merges-s2.json"
    assert all("--search-space" not in m for m in gpu.merges().values())
    smoke = qp.parser().parse_args(
        ["--profile", "gpu", "run", "--seed", "2", "--work", str(tmp_path), "--set", "a=1"]
    )
    got = qp.profile_of(smoke)
    assert got.result("-s2") == tmp_path / "quality_profile_gpu-s2-smoke.json"
    assert qp.common(2, got) == ["train.seed=2", "a=1"]
    assert qp.run_command(smoke, got).startswith("benchmarks/quality_profile.py --profile gpu run --seed 2")


def test_gpu_config_is_the_reference_recipe(qp, shared_data_dir: Path) -> None:
    from mtfuse import config

    cfg = config.load(qp.PROFILES["gpu"].config, [f"data_dir={shared_data_dir}"])
    assert cfg.subset.train is None and cfg.subset.eval is None  # full data
    assert [t.name for t in cfg.tasks] == list(qp.TASKS) and {t.max_length for t in cfg.tasks} == {128}
    tr = cfg.train
    assert (tr.lr, tr.epochs, tr.batch_size, tr.weight_decay, tr.warmup_ratio) == (3e-5, 5, 32, 0.01, 0.1)
    assert (tr.scheduler, tr.max_grad_norm, tr.precision, tr.select) == ("linear", 1.0, "bf16", "last")
    assert cfg.model.pooling == "pooler"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--profile", "gpu", "search"], "search is CPU-only"),
        (["--profile", "gpu", "run", "--seed", "1", "--set", "train.max_steps=2"], "--set needs --work"),
        (["run", "--seed", "1", "--work", "/nonexistent", "--set", "oops"], "KEY=VALUE"),
    ],
)
def test_refused(qp, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as e:
        qp.main(argv)
    assert message in str(e.value.code)


def test_commands_import_this_checkout(qp) -> None:
    """The mtfuse commands the script starts import this checkout's code (a worktree's, not the installed)."""
    code = "import mtfuse; print(mtfuse.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=qp.child_env())
    assert Path(out.stdout.strip()).resolve() == (ROOT / "src" / "mtfuse" / "__init__.py").resolve()


@pytest.mark.slow
def test_gpu_smoke_run(qp, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path) -> None:
    """The GPU profile's `run`, tiny: every system of the table, the overrides recorded, nothing in results/."""
    before = sorted(qp.RESULTS.glob("quality_profile_gpu*"))
    sets = [
        *smoke_sets(tmp_path, tiny_model_dir, shared_data_dir, steps=2),
        'train.precision="no"',  # quoted: YAML reads a bare no as false
    ]
    argv = ["--profile", "gpu", "run", "--seed", "1", "--work", str(tmp_path), "--mtl-arms", "mtl-equal"]
    qp.main([*argv, *(a for s in sets for a in ("--set", s))])

    out = json.loads((tmp_path / "quality_profile_gpu-s1-smoke.json").read_text())
    assert set(out["systems"]) == SYSTEMS
    assert out["overrides"] == sets and out["profile"] == "gpu"
    assert out["command"].startswith("benchmarks/quality_profile.py --profile gpu run --seed 1 --work ")
    assert "no train-holdout" in out["merge_search"]
    assert sorted(qp.RESULTS.glob("quality_profile_gpu*")) == before  # a smoke run never writes results/

    s1 = tmp_path / "s1"
    # the GPU config with the overrides after it, in the training runs and in the MT-DNN fine-tuning
    for run in (s1 / "st-cola", s1 / "mtl-equal", s1 / "mtdnn" / "cola"):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert (cfg["train"]["lr"], cfg["model"]["pooling"], cfg["train"]["epochs"]) == (3e-5, "pooler", 5)
        assert (cfg["subset"]["train"], cfg["train"]["max_steps"], cfg["train"]["seed"]) == (16, 2, 1)
        assert json.loads((run / "results.json").read_text())["steps"] == 2
    for name in ("merge-ta", "merge-ties"):  # at their defaults: nothing searched
        assert not (s1 / name / "search.json").exists()
        request = json.loads((s1 / name / "merge.json").read_text())["request"]
        assert request["search"] is None and request["params"]["scale"] == 1.0
