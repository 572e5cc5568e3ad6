"""`mtfuse merge`: merge the encoders of several runs into one multi-head run directory.

The methods (``fusion/merge/``) are pure functions over one tensor at a time. This module does the rest:
checks that the inputs can be merged at all (same architecture and shapes, same tokenizer, each input close to
the base it claims to descend from, no duplicate task), streams tensors from safetensors one name at a time
(peak memory: the merged model plus one tensor per input), keeps every input's task heads unchanged, and writes
a run directory that `evaluate`, `predict` and `compare` read like any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from mtfuse import rundir
from mtfuse.checkpoint import write_json_atomic
from mtfuse.config import RunConfig, dump
from mtfuse.errors import MtfuseError
from mtfuse.fusion.merge import MERGE_METHODS, tensor_generator
from mtfuse.model.encoder import resolve_model_path
from mtfuse.model.multitask import HEADS_JSON, HEADS_WEIGHTS, read_head_specs

ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "vocab_size", "max_position_embeddings", "type_vocab_size")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "spiece.model")


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
        raise MtfuseError(f"{model_dir}: weights are a pickle (pytorch_model.bin); mtfuse reads safetensors only")
    raise MtfuseError(f"{model_dir}: no model.safetensors")


def _read_config(model_dir: Path) -> dict[str, Any]:
    p = model_dir / "config.json"
    if not p.is_file():
        raise MtfuseError(f"{p}: missing (the encoder's Hugging Face config)")
    return json.loads(p.read_text())


def load_input(run_dir: Path) -> Input:
    model_dir = run_dir / rundir.MODEL
    if not (model_dir / HEADS_JSON).is_file():
        raise MtfuseError(f"{run_dir}: not a run directory with a trained model (no {rundir.MODEL}/{HEADS_JSON})")
    specs = read_head_specs(model_dir / HEADS_JSON)
    cfg = rundir.load_run_config(run_dir) if (run_dir / rundir.CONFIG).is_file() else None
    inp = Input(run_dir, model_dir, _read_config(model_dir), list(specs), cfg)
    inp.keymap = _weight_files(model_dir)
    return inp


def tokenizer_fingerprint(model_dir: Path) -> str | None:
    """Hash of the vocabulary-defining tokenizer files (None when the folder has none)."""
    h = hashlib.sha256()
    found = False
    for name in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model"):
        p = model_dir / name
        if p.is_file():
            data = p.read_bytes()
            if name == "tokenizer.json":  # truncation / padding settings are not part of the vocabulary
                spec = json.loads(data)
                spec.pop("truncation", None)
                spec.pop("padding", None)
                data = json.dumps(spec.get("model", spec), sort_keys=True).encode()
            h.update(name.encode() + data)
            found = True
            break  # one defining file is enough; tokenizer.json wins when present
    return h.hexdigest() if found else None


def check_inputs(inputs: list[Input], base_dir: Path | None) -> None:
    """Refuse inputs that cannot be merged meaningfully; every message names the run and the field."""
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
    fp = {inp.run_dir: tokenizer_fingerprint(inp.model_dir) for inp in inputs}
    if base_dir is not None:
        fp[base_dir] = tokenizer_fingerprint(base_dir)
    known = {k: v for k, v in fp.items() if v is not None}
    if len(set(known.values())) > 1:
        a, b = list(known)[0], next(k for k, v in known.items() if v != known[list(known)[0]])
        raise MtfuseError(
            f"{b}: its tokenizer vocabulary differs from {a}'s; merged embeddings would map tokens to the wrong "
            f"rows. Merge only models fine-tuned from the same base with the same tokenizer"
        )
    seen: dict[str, Path] = {}
    for inp in inputs:
        for t in inp.tasks:
            if t in seen:
                raise MtfuseError(
                    f"task '{t}' is in both {seen[t]} and {inp.run_dir}; a merged model keeps one head per task "
                    f"(merge runs of different tasks, or ensemble runs of the same task with `mtfuse ensemble`)"
                )
            seen[t] = inp.run_dir


def _base_keymap(base_dir: Path, names: list[str], base_config: dict[str, Any]) -> dict[str, tuple[Path, str]]:
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
            raise MtfuseError(f"{base_dir}: the base checkpoint has no tensor '{n}'; is it really the base model?")
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
) -> dict[str, Any]:
    """Merge the encoders of ``run_dirs`` with ``method``; write a run directory to ``output``.

    Returns the merge record (also written to ``output/merge.json``).
    """
    t0 = time.perf_counter()
    m = MERGE_METHODS.get(method)
    p = m.params(params or {})
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise MtfuseError(f"{output}: already exists and is not empty; pass --overwrite to replace it")
    if not run_dirs:
        raise MtfuseError("no run directory to merge")
    inputs = [load_input(Path(r)) for r in run_dirs]
    base_name = base or _common_base(inputs)
    base_dir = Path(resolve_model_path(base_name)) if base_name else None
    if m.needs_base and (base_dir is None or not base_dir.is_dir()):
        raise MtfuseError(
            f"merge method '{method}' needs the base model as a local folder; got {base_name!r} (pass --base DIR)"
        )
    check_inputs(inputs, base_dir)
    names = sorted(inputs[0].keymap)
    base_map: dict[str, tuple[Path, str]] = {}
    if base_dir is not None:
        base_map = _base_keymap(base_dir, names, _read_config(base_dir))

    merged: dict[str, torch.Tensor] = {}
    sq_diff = [0.0] * len(inputs)
    sq_base = 0.0
    with ExitStack() as stack:
        reader = _Tensors(stack)
        for name in names:
            tensors = [reader.get(inp.keymap[name]) for inp in inputs]
            b = reader.get(base_map[name]) if base_map else None
            if b is not None and b.shape != tensors[0].shape:
                raise MtfuseError(f"tensor '{name}': base has shape {list(b.shape)}, inputs {list(tensors[0].shape)}")
            if not tensors[0].is_floating_point():  # integer buffers (position ids): must agree, copied as is
                if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
                    raise MtfuseError(f"tensor '{name}': non-float buffer differs between inputs")
                merged[name] = tensors[0].contiguous()
                continue
            if b is not None:
                bf = b.float()
                sq_base += float((bf * bf).sum())
                for i, t in enumerate(tensors):
                    sq_diff[i] += float(((t.float() - bf) ** 2).sum())
            try:
                out = m.merge(tensors, b, p, weights, generator=tensor_generator(seed, name))
            except MtfuseError as e:
                raise type(e)(f"tensor '{name}': {e}") from None
            merged[name] = out.contiguous()

    distances = {}
    if base_map:
        for inp, sd in zip(inputs, sq_diff, strict=True):
            rel = (sd**0.5) / max(sq_base**0.5, 1e-12)
            distances[str(inp.run_dir)] = round(rel, 6)
            if rel > max_distance:
                raise MtfuseError(
                    f"{inp.run_dir}: its encoder is {rel:.3f} (relative L2) away from the base {base_name}; "
                    f"fine-tuned descendants are usually < 0.1. Wrong base? (raise max_distance to merge anyway)"
                )

    record = {
        "method": method,
        "params": p.model_dump(mode="json"),
        "weights": weights,
        "base": base_name,
        "seed": seed,
        "inputs": [{"run_dir": str(i.run_dir), "tasks": i.tasks} for i in inputs],
        "distance_to_base": distances,
        "merge_seconds": None,
    }
    _write_output(output, inputs, merged, record, overwrite)
    record["merge_seconds"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(output / "merge.json", record)
    return record


def _common_base(inputs: list[Input]) -> str | None:
    names = {i.run_config.model.name_or_path for i in inputs if i.run_config is not None}
    if len(names) > 1:
        raise MtfuseError(f"the runs were trained from different base models {sorted(names)}; pass --base")
    return names.pop() if names else None


def _write_output(output: Path, inputs: list[Input], merged: dict[str, torch.Tensor], record: dict[str, Any],
                  overwrite: bool) -> None:
    """Write the merged run directory under a temporary name, then move it into place."""
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

    heads: dict[str, torch.Tensor] = {}
    specs: list[dict[str, Any]] = []
    for inp in inputs:
        raw = json.loads((inp.model_dir / HEADS_JSON).read_text())
        specs.extend(raw["heads"])
        with safe_open(str(inp.model_dir / HEADS_WEIGHTS), "pt") as f:
            for k in f.keys():  # noqa: SIM118
                heads[k] = f.get_tensor(k)
    save_file(heads, str(model_dir / HEADS_WEIGHTS), metadata={"format": "pt"})
    (model_dir / HEADS_JSON).write_text(json.dumps({"format_version": 1, "heads": specs}, indent=2) + "\n")

    configs = [i.run_config for i in inputs if i.run_config is not None]
    if configs:
        tasks = [t for c in configs for t in c.tasks if any(t.name in i.tasks for i in inputs)]
        cfg = configs[0].model_copy(update={"tasks": tasks})
        cfg.model.name_or_path = record["base"] or cfg.model.name_or_path
        (tmp / rundir.CONFIG).write_text(dump(cfg), encoding="utf-8")
    n_params = sum(t.numel() for t in merged.values() if t.is_floating_point())
    n_heads = sum(t.numel() for t in heads.values())
    write_json_atomic(tmp / rundir.RESULTS, {
        "kind": "merged",
        "tasks": [s["task"] for s in specs],
        "merge": {k: v for k, v in record.items() if k != "merge_seconds"},
        "cost": {"parameters": n_params + n_heads, "encoder_parameters": n_params, "head_parameters": n_heads,
                 "train_seconds": sum(_train_seconds(i.run_dir) for i in inputs)},
    })
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
