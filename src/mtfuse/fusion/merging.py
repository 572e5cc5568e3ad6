"""`mtfuse merge`: merge the encoders of several runs into one multi-head run directory.

The methods (``fusion/merge/``) are pure functions over one tensor at a time. This module does the rest:
checks that the inputs can be merged at all (same architecture and shapes, same tokenizer, each input close to
the base it claims to descend from, no duplicate task), streams tensors from safetensors one name at a time
(peak memory: the merged model plus one tensor per input), keeps every input's task heads unchanged, and
writes a run directory that `evaluate`, `predict` and `compare` read like any other.

Data-dependent methods (``fusion/merge/stats.py``: ``fisher``, ``regmean``, ``adamerging``,
``greedy_soup``) declare the statistics they need (``needs_stats``); :func:`merge_runs` computes them first
(``fusion/merge_data.py``: one input model in memory at a time, cached as safetensors in a temporary folder)
and then streams tensors and statistics through the same driver. A method with ``repeated_tasks``
(greedy soup) may merge runs of the same task: the merged model keeps one head per task, the one the
statistics name (``heads`` in merge.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel
from safetensors import safe_open
from safetensors.torch import save_file

from mtfuse import rundir
from mtfuse.checkpoint import write_json_atomic
from mtfuse.config import RunConfig, dump
from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.fusion.merge import MERGE_METHODS, MergeMethod, tensor_generator
from mtfuse.fusion.merge import adamerging as _adamerging  # noqa: F401  (registers the method)
from mtfuse.fusion.merge import fisher as _fisher  # noqa: F401
from mtfuse.fusion.merge import greedy_soup as _greedy_soup  # noqa: F401
from mtfuse.fusion.merge import regmean as _regmean  # noqa: F401
from mtfuse.fusion.merge.stats import DATA_MERGE_METHODS, StatsMergeMethod
from mtfuse.fusion.merge_data import Stats, StatsContext, compute_stats
from mtfuse.model.encoder import resolve_model_path
from mtfuse.model.multitask import HEADS_JSON, HEADS_WEIGHTS, read_head_specs
from mtfuse.model.sharing import SHARING_JSON

ARCH_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
)


def get_method(name: str) -> MergeMethod:
    """A merge method by name: tensor-only (``MERGE_METHODS``) or data-dependent (``DATA_MERGE_METHODS``)."""
    for registry in (MERGE_METHODS, DATA_MERGE_METHODS):
        if name in registry:
            return registry.get(name)
    raise ConfigError(f"unknown merge method '{name}'; choose from [{', '.join(method_names())}]")


def method_names() -> list[str]:
    return sorted([*MERGE_METHODS.names(), *DATA_MERGE_METHODS.names()])


@dataclass
class Input:
    """One fine-tuned model to merge: a run directory's model folder and its tasks."""

    run_dir: Path
    model_dir: Path
    config: dict[str, Any]
    tasks: list[str]
    run_config: RunConfig | None = None
    keymap: dict[str, tuple[Path, str]] = field(default_factory=dict)  # tensor name -> (file, key in file)


def _weight_files(model_dir: Path) -> dict[str, tuple[Path, str]]:
    """Tensor name -> (safetensors file, key), for single-file and sharded (index.json) checkpoints."""
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        with safe_open(str(single), "pt") as f:
            return {k: (single, k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    if index.is_file():
        wm = json.loads(index.read_text())["weight_map"]
        return {k: (model_dir / fn, k) for k, fn in wm.items()}
    if (model_dir / "pytorch_model.bin").exists():
        raise MtfuseError(
            f"{model_dir}: weights are a pickle (pytorch_model.bin); mtfuse reads safetensors only"
        )
    raise MtfuseError(f"{model_dir}: no model.safetensors")


def _read_config(model_dir: Path) -> dict[str, Any]:
    p = model_dir / "config.json"
    if not p.is_file():
        raise MtfuseError(f"{p}: missing (the encoder's Hugging Face config)")
    return json.loads(p.read_text())


def load_input(run_dir: Path) -> Input:
    model_dir = run_dir / rundir.MODEL
    if not (model_dir / HEADS_JSON).is_file():
        raise MtfuseError(
            f"{run_dir}: not a run directory with a trained model (no {rundir.MODEL}/{HEADS_JSON})"
        )
    specs = read_head_specs(model_dir / HEADS_JSON)
    if (model_dir / SHARING_JSON).is_file():
        method = json.loads((model_dir / SHARING_JSON).read_text()).get("method")
        raise MtfuseError(
            f"{run_dir}: trained with sharing method '{method}', whose task-specific parts (adapters, layer "
            "copies, experts) live outside the encoder; merging supports hard-shared runs only"
        )
    cfg = rundir.load_run_config(run_dir) if (run_dir / rundir.CONFIG).is_file() else None
    inp = Input(run_dir, model_dir, _read_config(model_dir), list(specs), cfg)
    inp.keymap = _weight_files(model_dir)
    return inp


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}  # (file, mtime, size) -> hash: searches merge many times


def tokenizer_fingerprint(model_dir: Path) -> str | None:
    """Hash of the vocabulary-defining tokenizer files (None when the folder has none)."""
    h = hashlib.sha256()
    found = False
    for name in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model"):
        p = model_dir / name
        if p.is_file():
            st = p.stat()
            key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
            if key in _FINGERPRINTS:
                return _FINGERPRINTS[key]
            data = p.read_bytes()
            if name == "tokenizer.json":  # truncation / padding settings are not part of the vocabulary
                spec = json.loads(data)
                spec.pop("truncation", None)
                spec.pop("padding", None)
                data = json.dumps(spec.get("model", spec), sort_keys=True).encode()
            h.update(name.encode() + data)
            found = True
            _FINGERPRINTS[key] = h.hexdigest()
            break  # one defining file is enough; tokenizer.json wins when present
    return h.hexdigest() if found else None


def _raw_tokenizer_hash(model_dir: Path) -> str | None:
    """Hash of the bytes of the file :func:`tokenizer_fingerprint` would read (equal bytes, equal vocab)."""
    for name in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model"):
        p = model_dir / name
        if p.is_file():
            return hashlib.sha256(name.encode() + p.read_bytes()).hexdigest()
    return None


def check_inputs(inputs: list[Input], base_dir: Path | None, repeated_tasks: bool = False) -> None:
    """Refuse inputs that cannot be merged meaningfully; every message names the run and the field.

    ``repeated_tasks``: runs may share tasks (soups) if their heads for it agree."""
    first = inputs[0]
    for inp in inputs[1:]:
        for k in ARCH_KEYS:
            if inp.config.get(k) != first.config.get(k):
                raise MtfuseError(
                    f"{inp.run_dir}: encoder config '{k}' is {inp.config.get(k)!r} but {first.run_dir} has "
                    f"{first.config.get(k)!r}; only models of the same architecture can be merged"
                )
        if set(inp.keymap) != set(first.keymap):
            diff = sorted(set(inp.keymap) ^ set(first.keymap))
            raise MtfuseError(f"{inp.run_dir}: tensor names differ from {first.run_dir} (e.g. '{diff[0]}')")
    dirs = {inp.run_dir: inp.model_dir for inp in inputs}
    if base_dir is not None:
        dirs[base_dir] = base_dir
    raw = {_raw_tokenizer_hash(d) for d in dirs.values()} - {None}
    # byte-identical tokenizer files (the usual case) need no parsing; otherwise compare vocabularies
    fp = {k: tokenizer_fingerprint(d) for k, d in dirs.items()} if len(raw) > 1 else {}
    known = {k: v for k, v in fp.items() if v is not None}
    if len(set(known.values())) > 1:
        a, b = list(known)[0], next(k for k, v in known.items() if v != known[list(known)[0]])
        raise MtfuseError(
            f"{b}: its tokenizer vocabulary differs from {a}'s; merged embeddings would map tokens to the "
            f"wrong rows. Merge only models fine-tuned from the same base with the same tokenizer"
        )
    seen: dict[str, Path] = {}
    for inp in inputs:
        for t in inp.tasks:
            if t in seen and not repeated_tasks:
                raise MtfuseError(
                    f"task '{t}' is in both {seen[t]} and {inp.run_dir}; a merged model keeps one head per "
                    f"task (merge runs of different tasks, soup runs of the same task with "
                    f"`--method greedy_soup`, or ensemble them with `mtfuse ensemble`)"
                )
            if t in seen:
                _check_same_head(t, seen[t], inp.run_dir)
            seen.setdefault(t, inp.run_dir)


def _check_same_head(task: str, a: Path, b: Path) -> None:
    """Runs that share a task must predict the same thing (type, outputs, label order) to be souped."""
    sa = read_head_specs(a / rundir.MODEL / HEADS_JSON)[task]
    sb = read_head_specs(b / rundir.MODEL / HEADS_JSON)[task]
    for key in ("task_type", "head", "num_outputs", "labels"):
        if getattr(sa, key) != getattr(sb, key):
            raise MtfuseError(
                f"task '{task}': head '{key}' is {getattr(sb, key)!r} in {b} but {getattr(sa, key)!r} "
                f"in {a}; only runs of the same task with the same labels can share one head"
            )


def _base_keymap(
    base_dir: Path, names: list[str], base_config: dict[str, Any]
) -> dict[str, tuple[Path, str]]:
    """Match the inputs' tensor names in the base checkpoint (which may prefix them, e.g. 'bert.')."""
    files = _weight_files(base_dir)
    prefix = base_config.get("model_type", "")
    out = {}
    for n in names:
        for cand in (n, f"{prefix}.{n}", f"bert.{n}", f"roberta.{n}"):
            if cand in files:
                out[n] = files[cand]
                break
        else:
            raise MtfuseError(
                f"{base_dir}: the base checkpoint has no tensor '{n}'; is it really the base model?"
            )
    return out


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


@dataclass
class MergePlan:
    """Checked inputs of one merge: the runs, the base and where every tensor is."""

    inputs: list[Input]
    base_name: str | None
    base_dir: Path | None
    names: list[str]  # tensor names, sorted
    base_map: dict[str, tuple[Path, str]]  # tensor name -> (base file, key); empty without a base


def plan_merge(run_dirs: list[Path], m: MergeMethod, base: str | None = None) -> MergePlan:
    """Load and check the inputs of a merge with method ``m`` (no tensor is read yet)."""
    if not run_dirs:
        raise MtfuseError("no run directory to merge")
    inputs = [load_input(Path(r)) for r in run_dirs]
    base_name = base or _common_base(inputs)
    base_dir = Path(resolve_model_path(base_name)) if base_name else None
    if m.needs_base and (base_dir is None or not base_dir.is_dir()):
        raise MtfuseError(
            f"merge method '{m.name}' needs the base model as a local folder; got {base_name!r} "
            f"(pass --base DIR)"
        )
    check_inputs(inputs, base_dir, repeated_tasks=getattr(m, "repeated_tasks", False))
    names = sorted(inputs[0].keymap)
    base_map: dict[str, tuple[Path, str]] = {}
    if base_dir is not None:
        base_map = _base_keymap(base_dir, names, _read_config(base_dir))
    return MergePlan(inputs, base_name, base_dir, names, base_map)


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

    Peak memory: the merged model plus one tensor (and one statistic) per input. With ``sq_diff`` (one float
    per input) and ``sq_base`` (one float), accumulates ||theta_i - theta_base||^2 and ||theta_base||^2."""
    merged: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        reader = _Tensors(stack)
        for name in plan.names:
            tensors = [reader.get(inp.keymap[name]) for inp in plan.inputs]
            b = reader.get(plan.base_map[name]) if plan.base_map else None
            if b is not None and b.shape != tensors[0].shape:
                raise MtfuseError(
                    f"tensor '{name}': base has shape {list(b.shape)}, inputs {list(tensors[0].shape)}"
                )
            if not tensors[0].is_floating_point():  # integer buffers (position ids): must agree, copied as is
                if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
                    raise MtfuseError(f"tensor '{name}': non-float buffer differs between inputs")
                merged[name] = tensors[0].contiguous()
                continue
            if b is not None and sq_diff is not None and sq_base is not None:
                bf = b.float()
                sq_base[0] += float(torch.linalg.vector_norm(bf)) ** 2  # one kernel, no temporaries
                for i, t in enumerate(tensors):
                    sq_diff[i] += float(torch.dist(t.float(), bf)) ** 2
            try:
                if isinstance(m, StatsMergeMethod):
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
                else:
                    out = m.merge(tensors, b, p, weights, generator=tensor_generator(seed, name))
            except MtfuseError as e:
                raise type(e)(f"tensor '{name}': {e}") from None
            merged[name] = out.contiguous()
    return merged


def distances_to_base(plan: MergePlan) -> dict[str, float]:
    """Relative L2 distance ||theta_i - theta_base|| / ||theta_base|| of each input (empty without a base)."""
    if not plan.base_map:
        return {}
    sq_diff, sq_base = [0.0] * len(plan.inputs), 0.0
    with ExitStack() as stack:
        reader = _Tensors(stack)
        for name in plan.names:
            b = reader.get(plan.base_map[name])
            if not b.is_floating_point():
                continue
            bf = b.float()
            sq_base += float(torch.linalg.vector_norm(bf)) ** 2
            for i, inp in enumerate(plan.inputs):
                sq_diff[i] += float(torch.dist(reader.get(inp.keymap[name]).float(), bf)) ** 2
    return _relative(plan, sq_diff, sq_base)


def _relative(plan: MergePlan, sq_diff: list[float], sq_base: float) -> dict[str, float]:
    return {
        str(inp.run_dir): round((sd**0.5) / max(sq_base**0.5, 1e-12), 6)
        for inp, sd in zip(plan.inputs, sq_diff, strict=True)
    }


def check_distances(plan: MergePlan, distances: dict[str, float], max_distance: float) -> None:
    for run, rel in distances.items():
        if rel > max_distance:
            raise MtfuseError(
                f"{run}: its encoder is {rel:.3f} (relative L2) away from the base {plan.base_name}; "
                f"fine-tuned descendants are usually < 0.1. Wrong base? (raise max_distance to merge anyway)"
            )


def stats_context(
    plan: MergePlan,
    m: StatsMergeMethod,
    p: BaseModel,
    weights: list[float] | None,
    seed: int,
    stack: ExitStack,
    log: Callable[[str], None],
) -> StatsContext:
    """What a statistics function (``merge_data.STATS``) may read: inputs, tensors, and the merge itself."""
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
    )


def get_stats(
    plan: MergePlan,
    m: StatsMergeMethod,
    p: BaseModel,
    weights: list[float] | None,
    seed: int,
    log: Callable[[str], None] = lambda msg: None,
) -> Stats:
    """Compute the statistics ``m`` needs (close the result, or use it as a context manager)."""
    with ExitStack() as stack:
        return compute_stats(m.needs_stats, stats_context(plan, m, p, weights, seed, stack, log))


def merge_runs(
    run_dirs: list[Path],
    method: str,
    output: Path,
    params: dict[str, Any] | None = None,
    base: str | None = None,
    weights: list[float] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    max_distance: float = 0.5,
    *,
    stats: Stats | None = None,
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Merge the encoders of ``run_dirs`` with ``method``; write a run directory to ``output``.

    Data-dependent methods (``DATA_MERGE_METHODS``) get their statistics computed here (after the distance
    check, one input model at a time) unless ``stats`` passes precomputed ones (a search reuses them).
    ``extra`` is added to the record. Returns the merge record (also written to ``output/merge.json``).
    """
    t0 = time.perf_counter()
    m = get_method(method)
    p = m.params(params or {})
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise MtfuseError(f"{output}: already exists and is not empty; pass --overwrite to replace it")
    plan = plan_merge(run_dirs, m, base)
    inputs = plan.inputs

    own_stats = None
    if isinstance(m, StatsMergeMethod) and stats is None:
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
        "method": method,
        "params": p.model_dump(mode="json"),
        "weights": weights,
        "base": plan.base_name,
        "seed": seed,
        "inputs": [{"run_dir": str(i.run_dir), "tasks": i.tasks} for i in inputs],
        "distance_to_base": distances,
        "merge_seconds": None,
    }
    if stats is not None:
        record["stats"] = stats.info
    if head_from is not None:
        record["heads"] = {t: str(inputs[i].run_dir) for t, i in sorted(head_from.items())}
    record.update(extra or {})
    _write_output(output, inputs, merged, record, overwrite, head_from)
    record["merge_seconds"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(output / "merge.json", record)
    return record


def _common_base(inputs: list[Input]) -> str | None:
    names = {i.run_config.model.name_or_path for i in inputs if i.run_config is not None}
    if len(names) > 1:
        raise MtfuseError(f"the runs were trained from different base models {sorted(names)}; pass --base")
    return names.pop() if names else None


def _write_output(
    output: Path,
    inputs: list[Input],
    merged: dict[str, torch.Tensor],
    record: dict[str, Any],
    overwrite: bool,
    head_from: dict[str, int] | None = None,
) -> None:
    """Write the merged run directory under a temporary name, then move it into place.

    Every input's heads are kept; with ``head_from`` (task -> input index: inputs that share tasks), only the
    head of that input for each task."""
    tmp = output.with_name(f".tmp-{output.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
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
        raw = json.loads((inp.model_dir / HEADS_JSON).read_text())
        specs.extend(s for s in raw["heads"] if s["task"] in mine)
        with safe_open(str(inp.model_dir / HEADS_WEIGHTS), "pt") as f:
            for k in f.keys():  # noqa: SIM118
                if k.split(".", 1)[0] in mine:
                    heads[k] = f.get_tensor(k)
    save_file(heads, str(model_dir / HEADS_WEIGHTS), metadata={"format": "pt"})
    (model_dir / HEADS_JSON).write_text(json.dumps({"format_version": 1, "heads": specs}, indent=2) + "\n")

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
        cfg.model.name_or_path = record["base"] or cfg.model.name_or_path
        (tmp / rundir.CONFIG).write_text(dump(cfg), encoding="utf-8")
    n_params = sum(t.numel() for t in merged.values() if t.is_floating_point())
    n_heads = sum(t.numel() for t in heads.values())
    write_json_atomic(
        tmp / rundir.RESULTS,
        {
            "kind": "merged",
            "tasks": [s["task"] for s in specs],
            "merge": {k: v for k, v in record.items() if k != "merge_seconds"},
            "cost": {
                "parameters": n_params + n_heads,
                "encoder_parameters": n_params,
                "head_parameters": n_heads,
                "train_seconds": sum(_train_seconds(i.run_dir) for i in inputs),
            },
        },
    )
    write_json_atomic(tmp / "merge.json", record)
    if output.exists():
        if not overwrite:
            raise MtfuseError(f"{output}: already exists; pass --overwrite to replace it")
        shutil.rmtree(output)
    os.replace(tmp, output)


def _train_seconds(run_dir: Path) -> float:
    p = run_dir / rundir.RESULTS
    if not p.is_file():
        return 0.0
    return float(json.loads(p.read_text()).get("cost", {}).get("train_seconds", 0.0))


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` merge parameters (values parsed as YAML: numbers, lists, booleans)."""
    out: dict[str, Any] = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k.strip()] = yaml.safe_load(v)
    return out
