"""Data-parallel training: 2 CPU processes (gloo, started by ``accelerate launch``) end with the same weights
as 1 process with the same global batch, within a stated tolerance; so do 2 "nodes" of one process each (two
torchrun agents meeting through a c10d rendezvous on loopback, as two machines would over the network).

How to get 2 CPU processes from accelerate 1.x: ``accelerate launch --cpu --num_processes 2`` does NOT start
two (without ``--mpirun_hostfile`` its "simple launcher" runs a single process). ``--multi_gpu
--num_processes 2`` starts two through torchrun; they form a gloo group on the CPU when the Accelerator is
made with ``cpu=True``: ``train.cpu=true``, or (since mtfuse sets it for a multi-process launch on a machine
without CUDA) the default config on a CPU-only machine. The test forces ``train.cpu`` only where a GPU is
present, so on a CPU-only machine it checks that the default config works too.

Why the two runs can match at all:
- no dropout anywhere (encoder built with hidden and attention dropout 0, ``model.head_dropout=0``): the
  processes draw from other RNG streams than the single process, so dropout masks could never agree;
- each process takes ``idx[rank::world]`` of the global batch and back-propagates the mean loss over its
  share; DDP averages the gradients. That is the global mean only when both shares have the same size, so
  the batch size is even and every task's train subset is a multiple of the batch size (no short batch);
- only sentence-level tasks (CoLA, STS-B): a token task's loss is a mean over the *tokens* of a share, and
  the average of two per-share token means is not the token mean of the whole batch (shares hold different
  numbers of labelled tokens), so with CoNLL the runs would differ by design, not by rounding.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel

pytestmark = pytest.mark.slow  # several processes (launcher, 2 ranks, the 1-process run): ~20 s on 2 cores

# Tolerance: the largest absolute difference of any parameter after MAX_STEPS steps. The two runs do the same
# arithmetic in a different order: each rank pads its share to its own longest sequence, matmuls run over 4
# rows instead of 8, the gradient is (mean of 4 + mean of 4) / 2 through a gloo all-reduce instead of one
# mean of 8. Each of those changes fp32 results in the last bits (relative ~1e-7); AdamW turns gradients into
# steps of about lr = 1e-3 per parameter, so such rounding moves weights by ~1e-9..1e-7 per step. Observed
# here: 7.5e-8 after 12 steps. 1e-5 leaves a 100x margin and is still 100x smaller than one step's update,
# so a real discrepancy (a wrong shard, gradients not all-reduced, another task sampled) fails it. (AdamW is
# nearly blind to a uniform gradient scale: gradients summed instead of averaged would show only through
# gradient clipping.)
MAX_STEPS = 12
LR = 1e-3
TOLERANCE = 1e-5
WEIGHT_FILES = ("model/model.safetensors", "model/heads.safetensors")


@pytest.fixture(scope="module")
def no_dropout_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny random BERT of ``tiny_model_dir`` (same weights) with hidden and attention dropout 0."""
    directory = tmp_path_factory.mktemp("tiny_bert_no_dropout")
    model = BertModel.from_pretrained(
        str(tiny_model_dir), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    assert model.config.hidden_dropout_prob == 0.0 and model.config.attention_probs_dropout_prob == 0.0
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def config_path(
    tmp_path_factory: pytest.TempPathFactory, no_dropout_model_dir: Path, shared_data_dir: Path
) -> Path:
    work = tmp_path_factory.mktemp("distributed")
    data = "{data_dir}"
    cfg = {
        "data_dir": str(shared_data_dir),
        "cache_dir": str(work / "cache"),
        "model": {"name_or_path": str(no_dropout_model_dir), "head_dropout": 0.0},
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
        ],
        "subset": {"train": 48, "eval": 16},  # 48 = 6 full batches of 8: each rank always gets 4 examples
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": 8,  # global: 8 for the single process, 4 + 4 for the two
            "lr": LR,
            "eval_every": 6,
            "checkpoint_every": 6,
            "log_every": 3,
            "tensorboard": True,
            "progress": False,
            # fp32 on every machine: only there do 1 and 2 processes agree to 1e-5 (bf16's rounding depends on
            # how the batch is split; auto is bf16 on CPUs with native bf16)
            "precision": "no",
        },
    }
    if torch.cuda.is_available():
        cfg["train"]["cpu"] = True  # this test is about gloo on the CPU; without CUDA, the default must do
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], home: Path) -> tuple[subprocess.Popen, IO[str]]:
    env = dict(os.environ)
    env.pop("MTFUSE_FAULT", None)
    env.update(
        OMP_NUM_THREADS="1",  # one thread per process: 2 ranks on 2 cores, and steady timings
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(home),  # no ~/.cache/huggingface/accelerate/default_config.yaml can change the launch
    )
    env.pop("ACCELERATE_USE_CPU", None)
    log = tempfile.NamedTemporaryFile(mode="w+", suffix=".log")  # a file, not a pipe: never blocks
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log


def finish(proc: subprocess.Popen, log: IO[str]) -> None:
    try:
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    output = log.read()
    log.close()
    assert proc.returncode == 0, f"{' '.join(map(str, proc.args))}\nexit {proc.returncode}\n{output}"


@pytest.fixture(scope="module")
def runs(config_path: Path) -> dict[int, Path]:
    """The same config trained by 1 process and by 2 (started side by side)."""
    work = config_path.parent
    train = ["-m", "mtfuse.cli", "train", str(config_path), "--output"]
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
    ]  # fmt: skip
    one = start([sys.executable, *train, str(work / "one")], work / "hf")
    two = start([*launch, *train, str(work / "two")], work / "hf")
    finish(*two)
    finish(*one)
    return {1: work / "one", 2: work / "two"}


@pytest.fixture(scope="module")
def two_nodes(config_path: Path, runs: dict[int, Path]) -> Path:
    """The same config on 2 "nodes" of 1 process each: one torchrun agent per node, node ranks assigned by the
    c10d rendezvous at one endpoint (on a cluster: the first node's address), one shared run directory."""
    work = config_path.parent
    out = work / "nodes"
    port = free_port()
    agents = [
        start(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                f"127.0.0.1:{port}",
                "--rdzv_id",
                "mtfuse-nodes",
                "-m",
                "mtfuse.cli",
                "train",
                str(config_path),
                "--output",
                str(out),
            ],  # fmt: skip
            work / "hf",
        )
        for _ in range(2)
    ]
    for agent in agents:
        finish(*agent)
    return out


def test_two_nodes_match_one_process(runs: dict[int, Path], two_nodes: Path) -> None:
    results = json.loads((two_nodes / "results.json").read_text())
    assert results["cost"]["processes"] == 2 and results["steps"] == MAX_STEPS
    for name in WEIGHT_FILES:
        one, nodes = load_file(str(runs[1] / name)), load_file(str(two_nodes / name))
        assert sorted(one) == sorted(nodes), name
        diff = max((one[k].double() - nodes[k].double()).abs().max().item() for k in one)
        assert diff < TOLERANCE, f"{name}: differs by {diff:.3g} between 1 process and 2 nodes"
    steps = sorted((two_nodes / "checkpoints").glob("step-*"))
    assert [sorted(p.name for p in step.glob("rng-*.json")) for step in steps] == [
        ["rng-0.json", "rng-1.json"]
    ] * 2


def test_two_processes_match_one_process_with_the_same_global_batch(
    runs: dict[int, Path], no_dropout_model_dir: Path
) -> None:
    for n, run in runs.items():
        results = json.loads((run / "results.json").read_text())
        assert results["cost"]["processes"] == n and results["steps"] == MAX_STEPS
        start = json.loads((run / "log.jsonl").read_text().splitlines()[0])
        assert start["event"] == "start" and start["processes"] == n

    initial = load_file(str(no_dropout_model_dir / "model.safetensors"))
    worst: dict[str, tuple[float, str]] = {}
    moved = 0.0
    for name in WEIGHT_FILES:
        one, two = load_file(str(runs[1] / name)), load_file(str(runs[2] / name))
        assert sorted(one) == sorted(two), name
        diffs = {k: (one[k].double() - two[k].double()).abs().max().item() for k in one}
        key = max(diffs, key=lambda k: diffs[k])
        worst[name] = (diffs[key], key)
        if name == "model/model.safetensors":
            common = [k for k in one if k in initial]
            assert common, "the encoder's tensor names changed: cannot check that training moved the weights"
            moved = max((one[k].double() - initial[k].double()).abs().max().item() for k in common)
    for name, (diff, key) in worst.items():
        assert diff < TOLERANCE, f"{name}: {key} differs by {diff:.3g} between 1 and 2 processes"
    # not vacuous: training did move the encoder far more than the tolerance
    assert moved > 100 * TOLERANCE, moved


def test_only_rank_zero_writes_the_run_directory(runs: dict[int, Path]) -> None:
    def files(run: Path) -> set[str]:
        return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}

    one, two = files(runs[1]), files(runs[2])
    tb = [f for f in two if f.startswith("tb/")]
    assert len(tb) == 1, tb  # one event file: rank 1 opened no SummaryWriter
    # the same files as the single process (tensorboard's file name holds the pid), plus rank 1's RNG state
    rng1 = {f for f in two if Path(f).name.startswith("rng-1.")}
    assert {f for f in two - rng1 if not f.startswith("tb/")} == {f for f in one if not f.startswith("tb/")}

    for n, run in runs.items():
        steps = sorted((run / "checkpoints").glob("step-*"))
        assert [p.name for p in steps] == ["step-0000006", "step-0000012"]
        for step in steps:
            rng = sorted(p.name for p in step.glob("rng-*"))
            want = [f"rng-{r}.{ext}" for r in range(n) for ext in ("json", "safetensors")]
            assert rng == want, (step, rng)

        # a record written twice (once per rank) would show up here
        recs = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
        keys = [(r["step"], r.get("event", "train")) for r in recs]
        assert len(keys) == len(set(keys)), keys
        for pred in (run / "predictions").glob("*.jsonl"):
            assert len(pred.read_text().splitlines()) == 16, pred
