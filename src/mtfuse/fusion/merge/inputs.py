"""The runs a merge reads, checked before any tensor is: same architecture and tensor names, the same
tokenizer vocabulary, no task twice (unless the method soups runs of one task), hard-shared runs only, and a
base model to find every tensor in. From-scratch encoders (``model.name_or_path: lstm``) have no pretrained
base: they must share their initial weights (``RUN_DIR/init/``, ``mtfuse.model.initial``), which are then the
base unless ``--base`` names another."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

from mtfuse import rundir
from mtfuse.config import RunConfig
from mtfuse.errors import MtfuseError
from mtfuse.fusion.merge.method import MergeMethod
from mtfuse.model.encoder import ARCH_KEYS, LSTM, resolve_model_path
from mtfuse.model.initial import init_dir, init_fingerprint
from mtfuse.model.lstm import is_lstm_config
from mtfuse.model.multitask import read_head_specs
from mtfuse.model.sharing import SHARING_JSON

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
)


@dataclass
class MergeInput:
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


def load_input(run_dir: Path) -> MergeInput:
    model_dir = run_dir / rundir.MODEL
    if not (model_dir / rundir.HEADS_JSON).is_file():
        raise MtfuseError(
            f"{run_dir}: not a run directory with a trained model (no {rundir.MODEL}/{rundir.HEADS_JSON})"
        )
    specs = read_head_specs(model_dir / rundir.HEADS_JSON)
    if (model_dir / SHARING_JSON).is_file():
        method = json.loads((model_dir / SHARING_JSON).read_text()).get("method")
        raise MtfuseError(
            f"{run_dir}: trained with sharing method '{method}', whose task-specific parts (adapters, layer "
            "copies, experts) live outside the encoder; merging supports hard-shared runs only"
        )
    cfg = rundir.load_run_config(run_dir) if (run_dir / rundir.CONFIG).is_file() else None
    inp = MergeInput(run_dir, model_dir, _read_config(model_dir), list(specs), cfg)
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


def check_arch(inputs: list[MergeInput]) -> None:
    """The same encoder architecture (config keys) and tensor names in every input."""
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


def _common_init(inputs: list[MergeInput]) -> Path:
    """From-scratch encoders: the ``init/`` folder every input started from (refused when they differ)."""
    first = init_fingerprint(inputs[0].run_dir)
    for inp in inputs[1:]:
        if init_fingerprint(inp.run_dir) != first:
            seeds = [inputs[0].config.get("init_seed"), inp.config.get("init_seed")]
            raise MtfuseError(
                f"{inp.run_dir}: its from-scratch encoder started from other random weights than "
                f"{inputs[0].run_dir}'s (model.lstm.init_seed {seeds[1]!r} vs {seeds[0]!r}); models without a "
                "pretrained base merge only when they share an init: train them with the same "
                "model.lstm.init_seed (and architecture)"
            )
    return init_dir(inputs[0].run_dir)


def check_inputs(inputs: list[MergeInput], base_dir: Path | None, repeated_tasks: bool = False) -> None:
    """Refuse inputs that cannot be merged meaningfully; every message names the run and the field.

    ``repeated_tasks``: runs may share tasks (soups) if their heads for it agree."""
    check_arch(inputs)
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
    sa = read_head_specs(a / rundir.MODEL / rundir.HEADS_JSON)[task]
    sb = read_head_specs(b / rundir.MODEL / rundir.HEADS_JSON)[task]
    for key in ("task_type", "head", "num_outputs", "labels"):
        if getattr(sa, key) != getattr(sb, key):
            raise MtfuseError(
                f"task '{task}': head '{key}' is {getattr(sb, key)!r} in {b} but {getattr(sa, key)!r} "
                f"in {a}; only runs of the same task with the same labels can share one head"
            )


#: encoder tensors a base checkpoint may lack: ``AutoModel`` initialises them afresh when it loads the base.
#: RoBERTa-family checkpoints saved from a ``*ForMaskedLM`` model (xlm-roberta-base, roberta-base on the hub)
#: have no pooler (``add_pooling_layer=False``), so every run fine-tuned from them starts from a random pooler.
FRESH_ON_LOAD = ("pooler.",)


def _base_keymap(
    base_dir: Path, names: list[str], base_config: dict[str, Any]
) -> tuple[dict[str, tuple[Path, str]], list[str]]:
    """Match the inputs' tensor names in the base checkpoint (which may prefix them, e.g. 'bert.'): the map,
    and the names the base lacks because they are new in every model loaded from it (``FRESH_ON_LOAD``)."""
    files = _weight_files(base_dir)
    prefix = base_config.get("model_type", "")
    out, fresh = {}, []
    for n in names:
        for cand in (n, f"{prefix}.{n}", f"bert.{n}", f"roberta.{n}"):
            if cand in files:
                out[n] = files[cand]
                break
        else:
            if n.startswith(FRESH_ON_LOAD):
                fresh.append(n)
                continue
            raise MtfuseError(
                f"{base_dir}: the base checkpoint has no tensor '{n}'; is it really the base model?"
            )
    return out, fresh


@dataclass
class MergePlan:
    """Checked inputs of one merge: the runs, the base and where every tensor is."""

    inputs: list[MergeInput]
    base_name: str | None
    base_dir: Path | None
    names: list[str]  # tensor names, sorted
    base_map: dict[str, tuple[Path, str]]  # tensor name -> (base file, key); empty without a base
    shared_init: bool = False  # the base is the init every (from-scratch) input started from, checked
    #: tensors the base lacks (``FRESH_ON_LOAD``: a pooler the base checkpoint has none of): no task vector
    #: can be taken, so a method that needs the base gets none there and they are the inputs' mean
    no_base: list[str] = field(default_factory=list)


def plan_merge(run_dirs: list[Path], m: MergeMethod, base: str | None = None) -> MergePlan:
    """Load and check the inputs of a merge with method ``m`` (no tensor is read yet)."""
    if not run_dirs:
        raise MtfuseError("no run directory to merge")
    inputs = [load_input(Path(r)) for r in run_dirs]
    base_name = base or _common_base(inputs)
    base_dir = Path(resolve_model_path(base_name)) if base_name else None
    shared_init = False
    if is_lstm_config(inputs[0].config):
        check_arch(inputs)  # the same architecture first: then the inits can be compared
        shared = _common_init(inputs)
        if base in (
            None,
            LSTM,
        ):  # no pretrained base: the task vectors start from the init every input shares
            base_dir, shared_init = shared, True
    if m.needs_base and (base_dir is None or not base_dir.is_dir()):
        raise MtfuseError(
            f"merge method '{m.name}' needs the base model as a local folder; got {base_name!r} "
            f"(pass --base DIR)"
        )
    check_inputs(inputs, base_dir, repeated_tasks=m.repeated_tasks)
    names = sorted(inputs[0].keymap)
    base_map: dict[str, tuple[Path, str]] = {}
    no_base: list[str] = []
    if base_dir is not None:
        base_map, no_base = _base_keymap(base_dir, names, _read_config(base_dir))
    return MergePlan(inputs, base_name, base_dir, names, base_map, shared_init, no_base)


def _common_base(inputs: list[MergeInput]) -> str | None:
    names = {i.run_config.model.name_or_path for i in inputs if i.run_config is not None}
    if len(names) > 1:
        raise MtfuseError(f"the runs were trained from different base models {sorted(names)}; pass --base")
    return names.pop() if names else None
