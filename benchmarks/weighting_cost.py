"""Step time and peak memory of every weighting method vs equal weighting, and vs LibMTL where it has it.

One invocation measures every registered method (``mtfuse.weighting.WEIGHTINGS``: loss- and gradient-level)
on the same encoder, tasks and batches, in step mode 'joint' (a batch of every task in every step, so every
method sees the same data per step), and reports each as a ratio to ``equal`` measured in the same invocation.

Each method runs in its own fresh subprocess (peak memory is a per-process high-water mark), which:

* builds the model (``MultiTaskModel.build`` on the encoder, hard sharing), AdamW and the method exactly as
  ``mtfuse.train.train`` does, and runs the joint step of ``train.py``: forward of every task; loss-level
  methods ``combine`` + one backward (GradNorm's per-task last-layer gradients, FAMO's loss recomputation
  after the update); gradient-level methods ``streamed_task_gradients`` (task by task: its forward, then one
  ``autograd.grad`` on the shared parameters and the heads, into G's storage kept between steps, as the
  training step does) + ``aggregate`` + ``write_gradient``; then clip 1.0, AdamW step, zero grad. The batches are
  collated once beforehand (by the parent, with mtfuse's ``prepare_tasks`` / ``BatchStream`` / ``collate``),
  so data loading is not timed;
* after ``--warmup`` warm-up steps, times ``--steps`` steps of the method interleaved with as many ``equal``
  steps on the same batches in the same process (order alternating): the step-time ratio to ``equal`` is
  taken there, so a load that changes between processes (a shared machine) cancels out. Medians (ms per step
  and per phase of the method's steps: forward, gradients, the method's own work, optimizer);
* memory (CPU): the peak resident set during the warm-up + timed steps minus the resident set just before the
  first step (model, optimizer and batches loaded). The peak is read from ``VmHWM`` after resetting it with
  ``/proc/self/clear_refs`` (Linux >= 4.0; else ``ru_maxrss``). It includes AdamW's state (allocated at the
  first step, the same for every method), ``G`` and any tensors a method keeps (the interleaved ``equal``
  steps need no more than ``equal``'s own process, whose peak is the memory baseline). On a GPU: peak
  allocated CUDA memory over the allocated memory at the same point.

LibMTL (1.1.5, imported as ``LibMTL.weighting`` under a stub parent package, as the tests do): the per-task
backward passes cost the same in both libraries, so what is compared is the part that differs. Gradient-level
(PCGrad, GradVac, IMTL, MGDA, CAGrad, GradDrop): after the timed steps the worker builds one ``G`` from the
last batch and times mtfuse's ``aggregate`` and LibMTL's ``backward`` on that same ``G`` (its gradient
computation and write-back replaced, as in ``tests/test_grad_methods.py``; the weighted sum it would write
back is included), interleaved ``--agg-repeats`` times (median). Loss-level (EW, UW, DWA, GLS, RLW): the
weighting on ``[K]`` scalar leaf losses, ``combine(...).backward()`` vs LibMTL's ``backward(losses)`` (which
back-propagates itself), many iterations. LibMTL 1.1.5 has no MoCo, DB-MTL, Aligned-MTL, Nash-MTL, FairGrad,
UPGrad, DualProj, ConFIG, ExcessMTL, FAMO, STCH; its GradNorm needs its trainer (not timed).

CPU (a few minutes): .venv/bin/python benchmarks/weighting_cost.py --warmup 3 --steps 5
Quick check:         .venv/bin/python benchmarks/weighting_cost.py --tiny --warmup 1 --steps 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import importlib.util
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _compact import compact_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "glue.yaml"
RESULTS_DIR = ROOT / "benchmarks" / "results"
BASELINE = "equal"

# mtfuse gradient method -> (LibMTL class, kwargs of its backward from our params)
LIBMTL_GRADIENT = {
    "pcgrad": ("PCGrad", lambda p: {}),
    "gradvac": ("GradVac", lambda p: {"beta": p.beta}),
    "imtl": ("IMTL", lambda p: {}),
    "mgda": ("MGDA", lambda p: {"mgda_gn": p.normalization}),
    "cagrad": ("CAGrad", lambda p: {"calpha": p.c, "rescale": p.rescale}),
    "graddrop": ("GradDrop", lambda p: {"leak": p.leak}),
}
LIBMTL_LOSS = {
    "equal": ("EW", lambda p: {}),
    "uncertainty": ("UW", lambda p: {}),
    "dwa": ("DWA", lambda p: {"T": p.temperature}),
    "gls": ("GLS", lambda p: {}),
    "rlw": ("RLW", lambda p: {"dist": "Normal"}),
}
LIBMTL_NOTES = {
    "gradnorm": "LibMTL GradNorm: not timed (needs its trainer: shared params, autograd of the full encoder)",
    "graddrop": "LibMTL runs GradDrop on representation gradients only; here through that path on G "
    "(batch-1 representation, all-ones inputs)",
    "cagrad": "LibMTL CAGrad hard-codes 3 tasks",
    "mgda": "mtfuse: exact NNLS solver (default); LibMTL: Frank-Wolfe-type iterations",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default configs/glue.yaml")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="default ../shared/data")
    p.add_argument("--tasks", default="cola,mrpc,conll", help="comma list of the config's tasks")
    p.add_argument("--model", default="default", help="encoder: 'default' (packaged MiniLM), dir or hub name")
    p.add_argument("--tiny", action="store_true", help="a 2-layer hidden-32 random BERT (quick check)")
    p.add_argument("--batch-size", type=int, default=8, help="per task and step (default 8)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per example (default 64)")
    p.add_argument("--subset-train", type=int, default=256, help="train examples per task to draw from")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    p.add_argument("--repeats", type=int, default=1, help="runs per method (medians reported)")
    p.add_argument("--agg-repeats", type=int, default=3, help="mtfuse vs LibMTL aggregation timings")
    p.add_argument("--methods", default=None, help="comma list (default: every registered method)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    p.add_argument("--output", type=Path, default=None, help="results JSON (default benchmarks/results/...)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per worker before it is stopped")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--method", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class MemoryMeter:
    """Peak memory over a baseline: CUDA allocated memory, or the CPU resident set (VmHWM, reset by
    clear_refs)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"
        self.method = "cuda max_memory_allocated" if self.cuda else "VmHWM (clear_refs reset)"
        self.base_mb = 0.0

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.base_mb = self.torch.cuda.memory_allocated() / 2**20
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak resident set (VmHWM) to the current one
        except OSError:
            self.method = "ru_maxrss (peak since process start)"
        rss = _status_kib("VmRSS")
        self.base_mb = (rss if rss is not None else 0) / 1024

    def now_mb(self) -> float:
        if self.cuda:
            return self.torch.cuda.memory_allocated() / 2**20 - self.base_mb
        return (_status_kib("VmRSS") or 0) / 1024 - self.base_mb

    def peak_mb(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() / 2**20 - self.base_mb
        hwm = _status_kib("VmHWM") if "VmHWM" in self.method else None
        if hwm is None:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return hwm / 1024 - self.base_mb


# ------------------------------------------------------------------------------------------------- LibMTL


def libmtl_weighting_module() -> Any:
    """``LibMTL.weighting`` imported under a stub parent package (its ``__init__`` imports torchvision)."""
    spec = importlib.util.find_spec("LibMTL")
    if spec is None or not spec.submodule_search_locations:
        return None
    stub = types.ModuleType("LibMTL")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["LibMTL"] = stub
    return importlib.import_module("LibMTL.weighting")


def libmtl_gradient_runner(cls: type, G: Any, losses: Any, kwargs: dict[str, Any]) -> Any:
    """A callable running LibMTL's ``backward`` on our ``G``: its gradient computation and write-back replaced
    (the weighted sum ``w @ G`` it would write back is still computed)."""
    import torch

    obj, out, K = cls(), {}, G.shape[0]
    obj.task_num, obj.device, obj.rep_grad = K, G.device, False
    if cls.__name__ == "GradDrop":  # representation-gradient path: a batch-1 "representation" of size P
        obj.rep_grad = True
        obj.rep = torch.ones(1, G.shape[1], device=G.device, requires_grad=True)
        obj._compute_grad = lambda losses, mode, rep_grad=False: G[:, None, :]
    else:
        obj._compute_grad_dim = lambda: None
        obj._compute_grad = lambda losses, mode, rep_grad=False: G
        obj._get_grads = lambda losses, mode="backward": G
        obj._reset_grad = lambda new: out.__setitem__("d", new)
        obj._backward_new_grads = lambda w, per_grads=None, grads=None: out.__setitem__(
            "d", torch.einsum("i, i... -> ...", torch.as_tensor(w).to(grads), grads)
        )
    obj.init_param()

    def run() -> None:
        if obj.rep_grad:
            obj.rep.grad = None
        obj.backward(losses.clone(), **kwargs)

    return run


# ------------------------------------------------------------------------------------------------- worker


def worker(setup_path: Path, method: str, result_path: Path) -> None:
    """One method in this (fresh) process: build, warm up, time, measure memory, compare with LibMTL."""
    import torch

    from mtfuse.config import WeightingConfig
    from mtfuse.gradients import last_shared_weight, streamed_task_gradients, write_gradient
    from mtfuse.model import MultiTaskModel, load_encoder
    from mtfuse.params import params_check
    from mtfuse.tasks.types import TASK_TYPES
    from mtfuse.training.setup import build_optimizer, lr_lambda, shared_named_parameters
    from mtfuse.weighting import WEIGHTINGS

    setup = torch.load(setup_path, weights_only=False)
    if setup["threads"]:
        torch.set_num_threads(setup["threads"])
    cfg, device = setup["cfg"], torch.device(setup["device"])
    names: list[str] = list(setup["specs"])
    W, S = setup["warmup"], setup["steps"]
    cuda = device.type == "cuda"

    torch.manual_seed(cfg.train.seed)
    encoder, _ = load_encoder(setup["model"])
    core = MultiTaskModel.build(encoder, setup["specs"], cfg.model.sharing).to(device)
    loss_fn = {n: TASK_TYPES.get(t).loss for n, t in setup["types"].items()}
    batches = [
        {n: {k: v.to(device) for k, v in b.items()} for n, b in step.items()} for step in setup["batches"]
    ]

    cls = WEIGHTINGS.get(method)
    weighting = cls(
        names, params_check(cls, WeightingConfig(method=method), "weighting"), dict.fromkeys(names, 1.0)
    )
    equal = WEIGHTINGS.get(BASELINE)(names, None, dict.fromkeys(names, 1.0))  # the in-process reference
    optimizer = build_optimizer(core, cfg, weighting.parameters())
    total = W + 2 * S + 2
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.scheduler, 0, total))
    shared_named = [(n, p) for n, p in shared_named_parameters(core) if p.requires_grad]
    shared = [p for _, p in shared_named]
    shared_ids = {id(p) for p in shared}
    own = [p for p in core.parameters() if p.requires_grad and id(p) not in shared_ids]
    grad_method = weighting.is_gradient_method
    kept: dict[str, Any] = {"G": None}

    def sync() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def step(i: int, weighting: Any) -> dict[str, float]:
        """train.py's joint step (one process, fp32 on the CPU) with ``weighting``: phase times in seconds."""
        grad_method = weighting.is_gradient_method
        b = batches[i]
        ph = dict.fromkeys(("forward", "gradients", "method", "optimizer"), 0.0)
        t0 = sync()
        if grad_method:  # as the training step: each task's forward just before its backward
            order, losses = weighting.tasks, {}

            def one_at_a_time() -> Any:
                for t in order:
                    f0 = sync()
                    losses[t] = loss_fn[t](core(t, b[t]), b[t]["labels"])
                    ph["forward"] += sync() - f0
                    yield losses[t]

            G, own_grads = streamed_task_gradients(one_at_a_time(), len(order), shared, own, out=kept["G"])
            kept["G"] = G  # as the training step: G's storage is kept between steps
            loss_vec = torch.stack([losses[t].detach().float() for t in order])
            t2 = sync()
            d = weighting.aggregate(G, loss_vec, i)
            t3 = sync()
            write_gradient(shared, d)
            del G, d
            for p, g in zip(own, own_grads, strict=True):
                p.grad = g
            t4 = sync()
            ph["gradients"], ph["method"] = (t2 - t0 - ph["forward"]) + (t4 - t3), t3 - t2
        else:
            losses = {n: loss_fn[n](core(n, b[n]), b[n]["labels"]) for n in names}
            t1 = sync()
            ph["forward"] = t1 - t0
            loss = weighting.combine(losses, i)
            if weighting.needs_shared_layer_grads:  # GradNorm: per-task gradients at the last shared layer
                Wl = last_shared_weight(shared_named)
                layer = {
                    n: torch.autograd.grad(v, Wl, retain_graph=True, allow_unused=True)[0]
                    for n, v in losses.items()
                }
                weighting.gradnorm_step(
                    losses, {n: g if g is not None else torch.zeros_like(Wl) for n, g in layer.items()}
                )
            t2 = sync()
            loss.backward()
            t3 = sync()
            ph["method"], ph["gradients"] = t2 - t1, t3 - t2
        t5 = sync()
        core.add_extra_loss_grad(1.0)
        if cfg.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(core.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        t6 = sync()
        ph["optimizer"] = t6 - t5
        if weighting.needs_updated_losses:  # FAMO: the same batches' losses after the update
            with torch.no_grad():
                weighting.update({n: loss_fn[n](core(n, b[n]), b[n]["labels"]) for n in names})
            ph["method"] += sync() - t6
        for v in losses.values():
            v.item()
        ph["step"] = sync() - t0
        return ph

    core.train()
    meter = MemoryMeter(device)
    meter.start()
    for i in range(W):
        step(i, weighting)
    step(W - 1, equal)  # warm the equal path too
    # timed: S pairs (method, equal) on the same batch, order alternating, so that the ratio to equal is
    # measured in this process, minutes apart at most, whatever the load of a shared machine does meanwhile
    timed, ref = [], []
    for k in range(S):
        i = W + k
        if k % 2 == 0:
            timed.append(step(i, weighting))
            ref.append(step(i, equal))
        else:
            ref.append(step(i, equal))
            timed.append(step(i, weighting))
    peak = meter.peak_mb()
    retained = meter.now_mb()
    step_ms = 1e3 * statistics.median(p["step"] for p in timed)
    equal_ms = 1e3 * statistics.median(p["step"] for p in ref)
    res: dict[str, Any] = {
        "method": method,
        "kind": "gradient" if grad_method else "loss",
        "step_ms": step_ms,
        "step_ms_each": [round(1e3 * p["step"], 2) for p in timed],
        "equal_step_ms": equal_ms,
        "equal_step_ms_each": [round(1e3 * p["step"], 2) for p in ref],
        "step_ratio_in_process": step_ms / equal_ms,
        "phase_ms": {k: 1e3 * statistics.median(p[k] for p in timed) for k in timed[0] if k != "step"},
        "peak_mb": peak,
        "retained_mb": retained,
        "baseline_mb": meter.base_mb,
        "memory_method": meter.method,
        "shared_parameters": sum(p.numel() for p in shared),
        "threads": torch.get_num_threads(),
    }

    # ---- LibMTL: the part that differs, on the same inputs --------------------------------------------
    lib = libmtl_weighting_module()
    entry = (LIBMTL_GRADIENT if grad_method else LIBMTL_LOSS).get(method)
    if entry is not None and lib is None:
        res["libmtl"] = {"error": "LibMTL is not installed"}
    elif entry is not None:
        lib_cls, kw = getattr(lib, entry[0]), entry[1](weighting.params)
        cmp: dict[str, Any] = {"class": entry[0], "kwargs": kw}
        try:
            if grad_method:
                cmp.update(
                    compare_gradient(
                        core,
                        weighting,
                        batches[-1],
                        names,
                        loss_fn,
                        shared,
                        lib_cls,
                        kw,
                        setup["agg_repeats"],
                        sync,
                        device,
                    )
                )
            else:
                cmp.update(compare_loss(weighting, lib_cls, kw, len(names)))
        except Exception as e:  # report, don't fail the whole benchmark
            cmp["error"] = f"{type(e).__name__}: {e}"[:300]
        res["libmtl"] = cmp
    result_path.write_text(json.dumps(res, indent=1), encoding="utf-8")


def compare_gradient(
    core, weighting, batch, names, loss_fn, shared, lib_cls, kw, repeats, sync, device
) -> dict:
    """mtfuse ``aggregate`` vs LibMTL ``backward`` on one ``G`` (the last batch), interleaved, with the peak
    memory each adds over the resident/allocated memory before the call."""
    import torch

    from mtfuse.gradients import task_gradient_matrix

    core.zero_grad(set_to_none=True)
    losses = {n: loss_fn[n](core(n, batch[n]), batch[n]["labels"]) for n in names}
    G = task_gradient_matrix([losses[t] for t in weighting.tasks], shared)
    L = torch.stack([losses[t].detach().float() for t in weighting.tasks])
    del losses
    gc.collect()
    lib_run = libmtl_gradient_runner(lib_cls, G, L, kw)
    meter = MemoryMeter(device)
    times: dict[str, list[float]] = {"mtfuse": [], "libmtl": []}
    mem: dict[str, list[float]] = {"mtfuse": [], "libmtl": []}
    step = 10**6
    for r in range(repeats):
        for who in ("mtfuse", "libmtl") if r % 2 == 0 else ("libmtl", "mtfuse"):
            meter.start()
            t0 = sync()
            if who == "mtfuse":
                weighting.aggregate(G, L, step + r)
            else:
                lib_run()
            times[who].append(sync() - t0)
            mem[who].append(meter.peak_mb())
            gc.collect()
    return {
        "what": "aggregation on the same G",
        "G_shape": list(G.shape),
        "mtfuse_ms": 1e3 * statistics.median(times["mtfuse"]),
        "libmtl_ms": 1e3 * statistics.median(times["libmtl"]),
        "mtfuse_ms_each": [round(1e3 * t, 3) for t in times["mtfuse"]],
        "libmtl_ms_each": [round(1e3 * t, 3) for t in times["libmtl"]],
        "mtfuse_peak_mb": statistics.median(mem["mtfuse"]),
        "libmtl_peak_mb": statistics.median(mem["libmtl"]),
    }


def compare_loss(weighting, lib_cls, kw, K: int, iters: int = 200, blocks: int = 5) -> dict:
    """``combine(...).backward()`` vs LibMTL's ``backward`` on ``[K]`` scalar leaf losses (median of block
    means)."""
    import numpy as np
    import torch

    vals = [0.5 + 0.7 * k for k in range(K)]
    names = weighting.tasks
    obj = lib_cls()
    obj.task_num, obj.device, obj.rep_grad = K, torch.device("cpu"), False
    if lib_cls.__name__ == "DWA":  # past the first epochs, so its formula runs
        obj.epoch, obj.train_loss_buffer = 2, np.array([[1.0 + k, 0.9 + k, 0.8 + k] for k in range(K)])
    obj.init_param()

    def ours(s: int) -> None:
        leaf = {n: torch.tensor(v, requires_grad=True) for n, v in zip(names, vals, strict=True)}
        weighting.combine(leaf, s).backward()

    def theirs(s: int) -> None:
        leaf = [torch.tensor(v, requires_grad=True) for v in vals]
        obj.backward(torch.stack(leaf), **kw)

    times: dict[str, list[float]] = {"mtfuse": [], "libmtl": []}
    s = 10**6
    for b in range(blocks):
        for who, fn in (
            (("mtfuse", ours), ("libmtl", theirs)) if b % 2 == 0 else (("libmtl", theirs), ("mtfuse", ours))
        ):
            t0 = time.perf_counter()
            for _ in range(iters):
                fn(s)
                s += 1
            times[who].append((time.perf_counter() - t0) / iters)
    return {
        "what": f"weighting + backward on {K} scalar leaf losses",
        "mtfuse_ms": 1e3 * statistics.median(times["mtfuse"]),
        "libmtl_ms": 1e3 * statistics.median(times["libmtl"]),
    }


# ------------------------------------------------------------------------------------------------- parent


def make_tiny_model(directory: Path) -> str:
    """A 2-layer hidden-32 random BERT (seed 0) with the packaged MiniLM tokenizer (as tests/conftest.py)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtfuse.model.encoder import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("default"), use_fast=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def prepare(args: argparse.Namespace, model: str, device: str, path: Path) -> dict[str, Any]:
    """Config, head specs and the fixed batches (mtfuse's own data path), saved for the workers."""
    import torch

    from mtfuse import config as config_mod
    from mtfuse.batching import BatchStream
    from mtfuse.model import load_encoder
    from mtfuse.tasks.features import collate
    from mtfuse.tasks.prepare import prepare_tasks
    from mtfuse.training.setup import head_specs

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    overrides = [
        f"data_dir={args.data_dir}",
        f"only_tasks=[{','.join(tasks)}]",
        f"model.name_or_path={model}",
        f"subset.train={args.subset_train}",
        f"train.batch_size={args.batch_size}",
        f"train.seed={args.seed}",
        "train.step_mode=joint",
        *[f"tasks.{t}.max_length={args.max_length}" for t in tasks],
    ]
    cfg = config_mod.load(args.config, overrides)
    encoder, tokenizer = load_encoder(model)
    data = prepare_tasks(cfg, tokenizer, ["train"])
    dropout = cfg.model.head_dropout
    if dropout is None:
        dropout = float(getattr(encoder.config, "hidden_dropout_prob", 0.1))
    specs = head_specs(data, cfg, dropout)
    pad_id = tokenizer.pad_token_id or 0
    n = args.warmup + args.steps
    batches: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in range(n)]
    for i, (name, t) in enumerate(data.items()):
        enc = t.splits["train"]
        stream = BatchStream(enc.lengths(), args.batch_size, cfg.train.seed + i, cfg.train.group_by_length)
        for s in range(n):
            batches[s][name] = collate(enc, stream.next(), pad_id, t.type)
    setup = {
        "cfg": cfg,
        "model": model,
        "device": device,
        "specs": specs,
        "types": {n: t.type.name for n, t in data.items()},
        "batches": batches,
        "warmup": args.warmup,
        "steps": args.steps,
        "threads": args.threads,
        "agg_repeats": args.agg_repeats,
    }
    torch.save(setup, path)
    tokens = {n: [int(b[n]["input_ids"].shape[1]) for b in batches] for n in data}
    return {"tasks": list(data), "padded_lengths": tokens, "encoder_parameters": encoder.num_parameters()}


def run_worker(setup: Path, method: str, work: Path, timeout: int) -> dict[str, Any]:
    out = work / f"{method}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(setup), "--method", method,
           "--result", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"method": method, "error": f"exit {proc.returncode}: {' | '.join(tail)}"[:400]}
    res = json.loads(out.read_text())
    res["wall_s"] = round(wall, 1)
    return res


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Medians over repeats, and ratios to the baseline measured in the same invocation."""
    med: dict[str, dict[str, Any]] = {}
    for m, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            med[m] = {"method": m, "error": rs[-1]["error"]}
            continue
        r0 = ok[0]
        row = {
            "method": m,
            "kind": r0["kind"],
            "step_ms": statistics.median(r["step_ms"] for r in ok),
            "equal_step_ms": statistics.median(r["equal_step_ms"] for r in ok),
            "step_ratio": statistics.median(r["step_ratio_in_process"] for r in ok),
            "phase_ms": {k: statistics.median(r["phase_ms"][k] for r in ok) for k in r0["phase_ms"]},
            "peak_mb": statistics.median(r["peak_mb"] for r in ok),
            "retained_mb": statistics.median(r["retained_mb"] for r in ok),
            "runs": len(ok),
        }
        lib = [r["libmtl"] for r in ok if "libmtl" in r]
        if lib:
            good = [x for x in lib if "error" not in x]
            if good:
                row["libmtl"] = {k: v for k, v in good[0].items() if not k.endswith("_each")}  # in runs
                for k in ("mtfuse_ms", "libmtl_ms", "mtfuse_peak_mb", "libmtl_peak_mb"):
                    if k in good[0]:
                        row["libmtl"][k] = statistics.median(x[k] for x in good)
                row["libmtl"]["ratio"] = row["libmtl"]["mtfuse_ms"] / row["libmtl"]["libmtl_ms"]
            else:
                row["libmtl"] = lib[-1]
        med[m] = row
    base = med.get(BASELINE, {})
    for row in med.values():
        if "error" not in row and "step_ms" in base:
            row["step_ratio_separate_processes"] = row["step_ms"] / base["step_ms"]
            row["peak_ratio"] = row["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else None
            row["peak_extra_mb"] = row["peak_mb"] - base["peak_mb"]
    return med


def markdown(result: dict[str, Any]) -> str:
    rows = result["methods"]
    c = result["settings"]
    lines = [
        f"### Weighting methods: cost ({result['device_name']}{', tiny model' if c['tiny'] else ''})",
        "",
        f"{c['model']}, tasks {', '.join(result['tasks'])} (K={len(result['tasks'])}), "
        f"batch {c['batch_size']} per task, max length {c['max_length']}, joint step (every task every "
        f"step), fp32, {c['threads']} torch thread(s); every method in its own process ({c['repeats']} "
        f"run(s), median): {c['warmup']} warm-up steps, then {c['steps']} timed steps of the method "
        f"interleaved with {c['steps']} `{BASELINE}` steps on the same batches in the same process "
        "(medians; **x equal** is their ratio, so a changing load between processes cancels out). "
        f"{result['shared_parameters']:,} shared parameters: G = K x P float32 = {result['G_mb']:.0f} MB. "
        f"Phases: median ms of the method's steps (grads: the backward, or the K per-task gradients + the "
        "heads' own; method: `combine`/`aggregate`/hooks). Peak memory: "
        f"{result['memory_method']} over the process's memory just before the first step (AdamW state "
        f"included, the same for every method), compared with `{BASELINE}`'s own process.",
        "",
        "| method | kind | step ms | equal ms, same process | x equal | forward / grads / method / optim ms | "
        "peak MB | x equal | +MB vs equal |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    order = sorted(rows.values(), key=lambda r: (r.get("kind", "z") != "loss", r["method"] != BASELINE,
                                                r["method"]))  # fmt: skip
    for r in order:
        if "error" in r:
            lines.append(f"| `{r['method']}` | | failed: {r['error']} | | | | | | |")
            continue
        ph = r["phase_ms"]
        phases = f"{ph['forward']:.0f} / {ph['gradients']:.0f} / {ph['method']:.1f} / {ph['optimizer']:.0f}"
        cells = [
            f"`{r['method']}`",
            r["kind"],
            _num(r["step_ms"], ".0f"),
            _num(r["equal_step_ms"], ".0f"),
            _num(r.get("step_ratio"), ".2f"),
            phases,
            _num(r["peak_mb"], ".0f"),
            _num(r.get("peak_ratio"), ".2f"),
            _num(r.get("peak_extra_mb"), "+.0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "LibMTL 1.1.5, the part that differs on the same inputs (gradient-level: aggregation of the same G "
        f"from the last batch, median of {c['agg_repeats']} interleaved calls, and the peak memory the call "
        "adds; loss-level: weighting + backward of K scalar leaf losses, microseconds, same step otherwise):",
        "",
        "| mtfuse | LibMTL | mtfuse ms | LibMTL ms | mtfuse / LibMTL | mtfuse +MB | LibMTL +MB | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in order:
        lib = r.get("libmtl")
        note = LIBMTL_NOTES.get(r["method"], "")
        if lib is None:
            if r["method"] == "gradnorm":
                lines.append(f"| `gradnorm` | GradNorm | | | | | | {note} |")
            continue
        if "error" in lib:
            lines.append(f"| `{r['method']}` | {lib.get('class', '')} | | | | | | failed: {lib['error']} |")
            continue
        mem = (
            f"{lib['mtfuse_peak_mb']:.0f} | {lib['libmtl_peak_mb']:.0f}" if "mtfuse_peak_mb" in lib else " | "
        )
        fmt = ".3f" if lib["mtfuse_ms"] < 1 else ".1f"
        lines.append(
            f"| `{r['method']}` | {lib['class']} | {lib['mtfuse_ms']:{fmt}} | {lib['libmtl_ms']:{fmt}} | "
            f"{lib['ratio']:.2f} | {mem} | {note} |"
        )
    absent = sorted(m for m, r in rows.items() if "libmtl" not in r and m != "gradnorm")
    lines += ["", f"Not in LibMTL 1.1.5: {', '.join(f'`{m}`' for m in absent)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from mtfuse.machine import device_tag

    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.method, args.result)
        return
    import torch

    from mtfuse.weighting import WEIGHTINGS

    t_start = time.perf_counter()
    tag, device_name = device_tag(args.cpu)
    device = "cuda" if tag != "cpu" else "cpu"
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(WEIGHTINGS.names())
    for m in methods:
        WEIGHTINGS.get(m)  # unknown names fail here
    if BASELINE not in methods:
        methods.insert(0, BASELINE)
    methods = [BASELINE] + [m for m in methods if m != BASELINE]
    with tempfile.TemporaryDirectory(prefix="mtfuse-wcost-") as tmp:
        work = Path(tmp)
        model = make_tiny_model(work / "tiny") if args.tiny else args.model
        setup = work / "setup.pt"
        info = prepare(args, model, device, setup)
        print(f"tasks {info['tasks']}, padded lengths per step {info['padded_lengths']}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        for rep in range(args.repeats):
            order = methods if rep % 2 == 0 else [BASELINE, *reversed(methods[1:])]
            for m in order:
                r = run_worker(setup, m, work, args.timeout)
                runs[m].append(r)
                msg = (
                    r["error"] if "error" in r else f"{r['step_ms']:.0f} ms/step, peak +{r['peak_mb']:.0f} MB"
                )
                print(f"[{rep + 1}/{args.repeats}] {m:12s} {msg}", flush=True)
    med = summarize(runs)
    first = next((r for rs in runs.values() for r in rs if "error" not in r), {})
    P = first.get("shared_parameters", 0)
    import transformers

    import mtfuse

    result = {
        "benchmark": "weighting_cost",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": tag,
        "device_name": device_name,
        "settings": {
            "model": "tiny random BERT (2 layers, hidden 32)"
            if args.tiny
            else ("packaged all-MiniLM-L6-v2" if args.model == "default" else args.model),
            "tiny": args.tiny,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "subset_train": args.subset_train,
            "warmup": args.warmup,
            "steps": args.steps,
            "repeats": args.repeats,
            "agg_repeats": args.agg_repeats,
            "seed": args.seed,
            "threads": first.get("threads"),
            "step_mode": "joint",
            "precision": "fp32",
        },
        "command": " ".join([".venv/bin/python", "benchmarks/weighting_cost.py", *(argv or sys.argv[1:])]),
        "tasks": info["tasks"],
        "padded_lengths": info["padded_lengths"],
        "shared_parameters": P,
        "G_mb": len(info["tasks"]) * P * 4 / 2**20,
        "memory_method": first.get("memory_method", ""),
        "baseline": BASELINE,
        "methods": med,
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "versions": {
            "mtfuse": mtfuse.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "libmtl": _version("libmtl"),
            "python": platform.python_version(),
        },
    }
    out = args.output or RESULTS_DIR / f"weighting_cost-{tag}{'-tiny' if args.tiny else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_dump(result), encoding="utf-8")
    md = markdown(result)
    out.with_suffix(".md").write_text(md, encoding="utf-8")
    print("\n" + md)
    print(f"wrote {out} and {out.with_suffix('.md')} ({result['wall_seconds']:.0f} s)")


def _dump(result: dict[str, Any]) -> str:
    """The results JSON, small: floats rounded, lists of numbers on one line, per-run fields that the
    summary repeats dropped."""
    same = ("kind", "memory_method", "shared_parameters", "threads")
    runs = {
        m: [{k: v for k, v in r.items() if k not in same} for r in rs] for m, rs in result["runs"].items()
    }
    return compact_json({**result, "runs": runs})


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
