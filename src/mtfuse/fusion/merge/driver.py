"""`mtfuse merge`: merge the encoders of several runs into one multi-head run directory.

The methods (``methods/``) are pure functions over one tensor at a time. This module does the rest, for one
:class:`~mtfuse.fusion.merge.request.MergeRequest`: checks the inputs (``inputs.py``: same architecture and
shapes, same tokenizer, no duplicate task) and that each is close to the base it claims to descend from,
streams tensors from safetensors one name at a time (peak memory: the merged model plus one tensor per
input, or a few row blocks of them for elementwise methods, flat in the number of inputs), keeps every
input's task heads unchanged, and writes a run directory that `evaluate`, `predict` and `compare` read
like any other, atomically and only over an earlier merge output (``mtfuse.rundir``).

Data-dependent methods declare the statistics they need (``needs_stats``); :func:`merge_runs` computes them
first (``statistics.py``: one input model in memory at a time, cached as safetensors in a temporary folder)
and then streams tensors and statistics through the same driver. A method with ``repeated_tasks`` (greedy
soup) may merge runs of the same task: the merged model keeps one head per task, the one the statistics name
(``heads`` in merge.json).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors import safe_open
from safetensors.torch import save_file

from mtfuse import rundir
from mtfuse.config import dump
from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.fusion.merge import soup as _soup  # noqa: F401  (registers the greedy soup's statistics)
from mtfuse.fusion.merge.inputs import TOKENIZER_FILES, MergeInput, MergePlan, plan_merge
from mtfuse.fusion.merge.method import MergeMethod, tensor_generator
from mtfuse.fusion.merge.request import MergeRequest
from mtfuse.fusion.merge.statistics import Stats, StatsContext, compute_stats
from mtfuse.invocation import command_line
from mtfuse.model.encoder import LSTM
from mtfuse.model.initial import init_dir
from mtfuse.model.lstm import is_lstm_config
from mtfuse.model_card import write_card


class _Tensors:
    """Open safetensors files lazily and read one tensor at a time."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.handles: dict[Path, Any] = {}

    def get(self, where: tuple[Path, str]) -> torch.Tensor:
        path, key = where
        if path not in self.handles:
            self.handles[path] = self.stack.enter_context(safe_open(str(path), "pt"))
        return self.handles[path].get_tensor(key)


CHUNK = 1 << 20  # entries per step of squared_distance: a 4 MB float32 buffer, reused


def squared_distance(x: torch.Tensor, y: torch.Tensor | None, buf: torch.Tensor | None = None) -> float:
    """||x - y||^2 (``y`` None: ||x||^2) in float32, chunk by chunk through ``buf``: a subtraction into the
    buffer and a BLAS dot product per chunk, summed in float64. Written by hand because ``torch.dist`` is
    several times slower on the CPU and less accurate (relative error ~4e-4 against float64 on a 30522 x 384
    embedding, ~1e-6 here); the distance check reads every input tensor, so it set the pace of cheap merges."""
    xf = x.reshape(-1).float()
    yf = None if y is None else y.reshape(-1).float()
    if buf is None:
        buf = torch.empty(min(CHUNK, max(xf.numel(), 1)))
    total = 0.0
    for i in range(0, xf.numel(), buf.numel()):
        n = min(buf.numel(), xf.numel() - i)
        d = xf[i : i + n] if yf is None else torch.sub(xf[i : i + n], yf[i : i + n], out=buf[:n])
        total += float(torch.dot(d, d))
    return total


BLOCK = 1 << 19  # entries per row block over all inputs together: each temporary list of blocks is 2 MB


def merge_blocks(
    m: MergeMethod,
    p: BaseModel,
    tensors: list[torch.Tensor],
    base: torch.Tensor | None,
    weights: list[float] | None,
    finite: bool = False,
) -> torch.Tensor:
    """An ``elementwise`` method on row blocks of one tensor: the same result as on the whole tensors, with
    temporaries of ``BLOCK`` entries in all however many inputs there are (on the whole tensors TIES held ~2
    copies of every input's task vector: 0.98 GB more for 8 MiniLMs). The method's ``prepare`` (TIES' trim
    thresholds) first reads each input's whole task vector, streamed in ``CHUNK``-entry chunks."""
    first = tensors[0]
    if first.dim() == 0 or first.numel() == 0:
        return m.merge(tensors, base, p, weights, finite=finite)
    prepared = None
    if m.prepare is not None:
        assert base is not None  # prepare methods are task-vector methods
        prepared = [m.prepare(lambda t=t: _task_vector_chunks(t, base), t.numel(), p) for t in tensors]
    rows = max(1, BLOCK // (len(tensors) * max(1, first[0].numel())))
    out = torch.empty_like(first)
    for r in range(0, first.shape[0], rows):
        block = [t[r : r + rows] for t in tensors]
        b = None if base is None else base[r : r + rows]
        out[r : r + rows] = m.merge(block, b, p, weights, prepared=prepared, finite=finite)
    return out


def _task_vector_chunks(t: torch.Tensor, base: torch.Tensor) -> Iterator[torch.Tensor]:
    """theta - theta_base, ``CHUNK`` entries at a time, in the dtype ``MergeMethod.merge`` computes in."""
    work = torch.float64 if torch.float64 in (t.dtype, base.dtype) else torch.float32
    tf, bf = t.reshape(-1), base.reshape(-1)
    for i in range(0, tf.numel(), CHUNK):
        yield tf[i : i + CHUNK].to(work) - bf[i : i + CHUNK].to(work)


def merge_state(
    plan: MergePlan,
    m: MergeMethod,
    p: BaseModel,
    weights: list[float] | None,
    seed: int = 0,
    stats: Stats | None = None,
    sq_diff: list[float] | None = None,
    sq_base: list[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Stream every tensor of the inputs (and base) through ``m``: the merged encoder state dict.

    Peak memory: the merged model plus one tensor (and one statistic) per input; for ``elementwise`` methods
    the merged model plus a few ``BLOCK``-entry blocks, flat in the number of inputs (``merge_blocks``). With
    ``sq_diff`` (one float per input) and ``sq_base`` (one float), accumulates ||theta_i - theta_base||^2 and ||theta_base||^2."""
    merged: dict[str, torch.Tensor] = {}
    buf = torch.empty(CHUNK) if sq_diff is not None else None
    with ExitStack() as stack:
        reader = _Tensors(stack)
        for name in plan.names:
            tensors = [reader.get(inp.keymap[name]) for inp in plan.inputs]
            if name in plan.no_base and m.needs_base:  # no base to take task vectors from: the mean
                merged[name] = (sum(t.double() for t in tensors) / len(tensors)).to(tensors[0].dtype)
                continue
            b = reader.get(plan.base_map[name]) if name in plan.base_map else None
            bad = next((t for t in tensors if b is not None and t.shape != b.shape), None)
            if bad is not None:
                raise MtfuseError(
                    f"tensor '{name}': base has shape {list(b.shape)}, inputs {list(bad.shape)}"
                )
            if not tensors[0].is_floating_point():  # integer buffers (position ids): must agree, copied as is
                if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
                    raise MtfuseError(f"tensor '{name}': non-float buffer differs between inputs")
                merged[name] = tensors[0].contiguous()
                continue
            finite = False  # proven by finite squared distances: then merge skips its own NaN / inf check
            if b is not None and sq_diff is not None and sq_base is not None:
                sums = [squared_distance(b, None, buf), *(squared_distance(t, b, buf) for t in tensors)]
                sq_base[0] += sums[0]
                for i, d in enumerate(sums[1:]):
                    sq_diff[i] += d
                finite = all(math.isfinite(x) for x in sums)
            try:
                if m.needs_stats:
                    if stats is None:
                        raise ConfigError(f"merge method '{m.name}' needs its statistics ({m.needs_stats})")
                    out = m.merge(
                        tensors,
                        b,
                        p,
                        weights,
                        stats=stats.tensors(name),
                        generator=tensor_generator(seed, name),
                    )
                elif m.elementwise:
                    out = merge_blocks(m, p, tensors, b, weights, finite)
                else:
                    g = tensor_generator(seed, name) if m.stochastic else None  # hashing costs, per tensor
                    out = m.merge(tensors, b, p, weights, generator=g, finite=finite)
            except MtfuseError as e:
                raise type(e)(f"tensor '{name}': {e}") from None
            merged[name] = out.contiguous()
    return merged


def distances_to_base(plan: MergePlan) -> dict[str, float]:
    """Relative L2 distance ||theta_i - theta_base|| / ||theta_base|| of each input (empty without a base)."""
    if not plan.base_map:
        return {}
    sq_diff, sq_base, buf = [0.0] * len(plan.inputs), 0.0, torch.empty(CHUNK)
    with ExitStack() as stack:
        reader = _Tensors(stack)
        for name in plan.base_map:
            b = reader.get(plan.base_map[name])
            if not b.is_floating_point():
                continue
            sq_base += squared_distance(b, None, buf)
            for i, inp in enumerate(plan.inputs):
                t = reader.get(inp.keymap[name])
                if t.shape != b.shape:
                    raise MtfuseError(
                        f"tensor '{name}': base has shape {list(b.shape)}, inputs {list(t.shape)}"
                    )
                sq_diff[i] += squared_distance(t, b, buf)
    return _relative(plan, sq_diff, sq_base)


def _relative(plan: MergePlan, sq_diff: list[float], sq_base: float) -> dict[str, float]:
    return {
        str(inp.run_dir): round((sd**0.5) / max(sq_base**0.5, 1e-12), 6)
        for inp, sd in zip(plan.inputs, sq_diff, strict=True)
    }


def check_distances(plan: MergePlan, distances: dict[str, float], max_distance: float) -> None:
    if plan.shared_init:  # the inputs provably started from the base: trained from scratch, far from it
        return
    for run, rel in distances.items():
        if rel > max_distance:
            raise MtfuseError(
                f"{run}: its encoder is {rel:.3f} (relative L2) away from the base {plan.base_name}; "
                f"fine-tuned descendants are usually < 0.1. Wrong base? (raise max_distance to merge anyway)"
            )


def stats_context(
    plan: MergePlan,
    m: MergeMethod,
    p: BaseModel,
    weights: list[float] | None,
    seed: int,
    stack: ExitStack,
    log: Callable[[str], None],
) -> StatsContext:
    """What a statistics function (``statistics.STATS``) may read: inputs, tensors, and the merge itself."""
    reader = _Tensors(stack)
    return StatsContext(
        inputs=plan.inputs,
        params=p,
        seed=seed,
        names=plan.names,
        read=lambda i, name: reader.get(plan.inputs[i].keymap[name]),
        read_base=(lambda name: reader.get(plan.base_map[name])) if plan.base_map else None,
        merge_with=lambda st: merge_state(plan, m, p, weights, seed, st),
        log=log,
        no_base=list(plan.no_base),
    )


def get_stats(
    plan: MergePlan,
    m: MergeMethod,
    p: BaseModel,
    weights: list[float] | None,
    seed: int,
    log: Callable[[str], None] = lambda msg: None,
) -> Stats:
    """Compute the statistics ``m`` needs (close the result, or use it as a context manager)."""
    with ExitStack() as stack:
        assert m.needs_stats is not None
        return compute_stats(m.needs_stats, stats_context(plan, m, p, weights, seed, stack, log))


def merge_runs(
    request: MergeRequest,
    output: Path,
    overwrite: bool = False,
    *,
    stats: Stats | None = None,
    extra: dict[str, Any] | None = None,
    also: Callable[[Path], None] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Merge the encoders of ``request.runs`` with ``request.method``; write a run directory to ``output``.

    ``output`` must be new, empty or (with ``overwrite``) an earlier merge output: anything else (a training
    run, a user's files) is refused before any work. Data-dependent methods get their statistics computed
    here (after the distance check, one input model at a time) unless ``stats`` passes precomputed ones (a
    search reuses them). ``extra`` is added to the record; ``also(tmp)`` writes more files into the output
    before it is moved into place. Returns the merge record (also written to ``output/merge.json``, with the
    resolved request under ``request``)."""
    t0 = time.perf_counter()
    output = Path(output)
    m = request.merge_method()
    p = m.params(request.params)
    weights, seed, max_distance = request.weights, request.seed, request.max_distance
    rundir.check_output(output, "merge", overwrite)  # before anything slow
    plan = plan_merge(request.runs, m, request.base)
    inputs = plan.inputs

    own_stats = None
    if m.needs_stats and stats is None:
        check_distances(plan, distances_to_base(plan), max_distance)  # before the expensive part
        stats = own_stats = get_stats(plan, m, p, weights, seed, log)
    try:
        sq_diff, sq_base = [0.0] * len(inputs), [0.0]
        merged = merge_state(plan, m, p, weights, seed, stats, sq_diff, sq_base)
    finally:
        if own_stats is not None:
            own_stats.close()
    distances = _relative(plan, sq_diff, sq_base[0]) if plan.base_map else {}
    check_distances(plan, distances, max_distance)

    head_from = stats.head_from if stats is not None else None
    record: dict[str, Any] = {
        "method": request.method,
        "params": p.model_dump(mode="json"),
        "weights": weights,
        "base": plan.base_name,
        "seed": seed,
        "inputs": [{"run_dir": str(i.run_dir), "tasks": i.tasks} for i in inputs],
        "distance_to_base": distances,
        "merge_seconds": None,
        "request": request.record(plan.base_name),
    }
    if plan.no_base and m.needs_base:  # e.g. xlm-roberta-base has no pooler: each run started from a new one
        record["no_base"] = {"tensors": plan.no_base, "merged_as": "the inputs' mean"}
        log(f"the base has no {', '.join(plan.no_base)}: merged as the inputs' mean")
    if stats is not None:
        record["stats"] = stats.info
    if head_from is not None:
        record["heads"] = {t: str(inputs[i].run_dir) for t, i in sorted(head_from.items())}
    record.update(extra or {})

    def fill(tmp: Path) -> None:
        _write_merged(tmp, inputs, merged, record, head_from)
        if is_lstm_config(inputs[0].config):  # from scratch: the merged run keeps the init its inputs share
            shutil.copytree(init_dir(inputs[0].run_dir), tmp / rundir.INIT)
        if also is not None:
            also(tmp)
        record["merge_seconds"] = round(time.perf_counter() - t0, 3)
        rundir.write_json(tmp / rundir.MERGE, record)
        write_card(tmp, name=output.name)  # no dev metrics yet: command.score_merge rewrites it

    rundir.write_dir_atomic(output, "merge", overwrite, fill)
    return record


def _write_merged(
    tmp: Path,
    inputs: list[MergeInput],
    merged: dict[str, torch.Tensor],
    record: dict[str, Any],
    head_from: dict[str, int] | None = None,
) -> None:
    """Write the merged run directory's files into ``tmp`` (moved into place by ``rundir``).

    Every input's heads are kept; with ``head_from`` (task -> input index: inputs that share tasks), only the
    head of that input for each task."""
    model_dir = tmp / rundir.MODEL
    model_dir.mkdir(parents=True)
    first = inputs[0]
    shutil.copy2(first.model_dir / "config.json", model_dir / "config.json")
    for f in TOKENIZER_FILES:
        if (first.model_dir / f).is_file():
            shutil.copy2(first.model_dir / f, model_dir / f)
    save_file(merged, str(model_dir / "model.safetensors"), metadata={"format": "pt"})

    if head_from is None:
        head_from = {t: i for i, inp in enumerate(inputs) for t in inp.tasks}
    heads: dict[str, torch.Tensor] = {}
    specs: list[dict[str, Any]] = []
    for i, inp in enumerate(inputs):
        mine = {t for t in inp.tasks if head_from.get(t) == i}
        if not mine:
            continue
        raw = json.loads((inp.model_dir / rundir.HEADS_JSON).read_text())
        specs.extend(s for s in raw["heads"] if s["task"] in mine)
        with safe_open(str(inp.model_dir / rundir.HEADS_WEIGHTS), "pt") as f:
            for k in f.keys():  # noqa: SIM118
                if k.split(".", 1)[0] in mine:
                    heads[k] = f.get_tensor(k)
    save_file(heads, str(model_dir / rundir.HEADS_WEIGHTS), metadata={"format": "pt"})
    (model_dir / rundir.HEADS_JSON).write_text(
        json.dumps({"format_version": 1, "heads": specs}, indent=2) + "\n"
    )

    configs = [i.run_config for i in inputs if i.run_config is not None]
    if configs:
        task_cfgs: dict[str, Any] = {}
        for t, i in head_from.items():  # each task's config from the run whose head is kept
            cfg_i = inputs[i].run_config
            for c in [cfg_i, *configs]:
                found = next((tc for tc in c.tasks if tc.name == t), None) if c is not None else None
                if found is not None:
                    task_cfgs[t] = found
                    break
        tasks = [task_cfgs[s["task"]] for s in specs if s["task"] in task_cfgs]
        cfg = configs[0].model_copy(update={"tasks": tasks})
        if cfg.model.name_or_path != LSTM:  # a from-scratch run's base (its init) is in merge.json
            cfg.model.name_or_path = record["base"] or cfg.model.name_or_path
        (tmp / rundir.CONFIG).write_text(dump(cfg), encoding="utf-8")
    if configs[0].model.hf_copies if configs else True:
        _write_hf_copies(model_dir, specs)
    n_params = sum(t.numel() for t in merged.values() if t.is_floating_point())
    n_heads = sum(t.numel() for t in heads.values())
    rundir.write_json(
        tmp / rundir.RESULTS,
        {
            "kind": "merged",
            "tasks": [s["task"] for s in specs],
            "command": command_line(),
            "merge": {k: v for k, v in record.items() if k != "merge_seconds"},
            "cost": {
                "parameters": n_params + n_heads,
                "encoder_parameters": n_params,
                "head_parameters": n_heads,
                "train_seconds": sum(_train_seconds(i.run_dir) for i in inputs),
            },
        },
    )


def _train_seconds(run_dir: Path) -> float:
    p = run_dir / rundir.RESULTS
    if not p.is_file():
        return 0.0
    return float(json.loads(p.read_text()).get("cost", {}).get("train_seconds", 0.0))


def _write_hf_copies(model_dir: Path, specs: list[dict[str, Any]]) -> None:
    """``model/hf/<task>/`` for each generation task with its own decoder, as training writes them: the merged
    encoder with that task's decoder, loadable by plain transformers (``model.hf_copies``)."""
    from mtfuse.model import MultiTaskModel

    if not any(s.get("task_type") == "generation" for s in specs):
        return  # no generation head: nothing to write, and no need to load the model
    model, tokenizer = MultiTaskModel.load(model_dir)
    model.save_hf(model_dir / rundir.HF, tokenizer)
