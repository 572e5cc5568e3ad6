"""One shared encoder, one head per task (hard parameter sharing).

``MultiTaskModel(encoder, heads, specs)``: ``encoder`` is any Hugging Face ``PreTrainedModel`` that returns
``last_hidden_state`` (and ``pooler_output`` when it has a pooler); ``heads`` is an ``nn.ModuleDict`` task ->
head (see ``mtfuse.model.heads``); ``specs`` describes each head so it can be rebuilt from disk.
``forward(task, batch)`` runs one task; ``forward_all(batch, tasks)`` runs the encoder once, then every
listed head.

A saved model directory holds:

- ``config.json`` + ``model.safetensors``: the encoder, loadable with plain ``AutoModel.from_pretrained``
- tokenizer files (when a tokenizer was given to :meth:`MultiTaskModel.save`)
- ``heads.safetensors``: every head tensor, keyed ``"<task>.<parameter name>"``
- ``heads.json``: ``{"format_version": 1, "heads": [HeadSpec as a dict, ...]}``
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from mtfuse.errors import MtfuseError, where
from mtfuse.model.encoder import load_tokenizer
from mtfuse.model.heads import HEADS

HEADS_JSON = "heads.json"
HEADS_WEIGHTS = "heads.safetensors"
FORMAT_VERSION = 1

# Only these batch keys reach the encoder; labels and other collate extras stay out of its forward().
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json")


@dataclass
class HeadSpec:
    """Everything needed to rebuild one task's head."""

    task: str
    task_type: str
    head: str  # a name in HEADS
    num_outputs: int
    pooling: str
    dropout: float
    labels: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "head spec") -> HeadSpec:
        """Validate a dict (from heads.json); errors name ``source`` and the field."""
        if not isinstance(raw, dict):
            raise MtfuseError(f"{source}: expected an object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MtfuseError(
                f"{where(source, field=unknown[0])}: unknown field; choose from {sorted(known)}"
            )
        types: dict[str, tuple[type, ...]] = {
            "task": (str,),
            "task_type": (str,),
            "head": (str,),
            "num_outputs": (int,),
            "pooling": (str,),
            "dropout": (int, float),
        }
        for name, ok in types.items():
            if name not in raw:
                raise MtfuseError(f"{where(source, field=name)}: missing")
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, ok):
                raise MtfuseError(f"{where(source, field=name)}: expected {ok[0].__name__}, got {value!r}")
        labels = raw.get("labels")
        if labels is not None and (
            not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
        ):
            raise MtfuseError(f"{where(source, field='labels')}: expected a list of strings or null")
        return cls(
            task=raw["task"],
            task_type=raw["task_type"],
            head=raw["head"],
            num_outputs=raw["num_outputs"],
            pooling=raw["pooling"],
            dropout=float(raw["dropout"]),
            labels=list(labels) if labels is not None else None,
        )


class MultiTaskModel(nn.Module):
    """A shared encoder plus ``heads[task]`` for every task in ``specs``."""

    def __init__(self, encoder: PreTrainedModel, heads: nn.ModuleDict, specs: Mapping[str, HeadSpec]) -> None:
        super().__init__()
        if set(heads.keys()) != set(specs):
            raise MtfuseError(
                f"heads {sorted(heads.keys())} and head specs {sorted(specs)} name different tasks"
            )
        for task, spec in specs.items():
            if spec.task != task:
                raise MtfuseError(f"head spec stored under task '{task}' says task '{spec.task}'")
        self.encoder = encoder
        self.heads = heads
        self.specs: dict[str, HeadSpec] = dict(specs)
        params = inspect.signature(encoder.forward).parameters
        self._encoder_inputs = tuple(k for k in ENCODER_INPUTS if k in params)

    @classmethod
    def build(cls, encoder: PreTrainedModel, specs: Mapping[str, HeadSpec]) -> MultiTaskModel:
        """Create fresh heads (from ``HEADS``) on the encoder's device and in its dtype."""
        config = encoder.config
        init_range = float(getattr(config, "initializer_range", 0.02))
        heads = nn.ModuleDict()
        for task, spec in specs.items():
            head = HEADS.get(spec.head)(
                config.hidden_size, spec.num_outputs, spec.pooling, spec.dropout, init_range
            )
            try:
                heads[task] = head
            except KeyError as e:  # '.' in the name, or a ModuleDict attribute such as 'update' or 'keys'
                raise MtfuseError(f"task name '{task}' cannot name a head ({e}); rename the task") from None
        param = next(encoder.parameters(), None)
        if param is not None:
            heads.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)
        return cls(encoder, heads, specs)

    @property
    def tasks(self) -> list[str]:
        return list(self.specs)

    def _check_tasks(self, tasks: list[str]) -> None:
        unknown = [t for t in tasks if t not in self.specs]
        if unknown:
            raise MtfuseError(f"unknown task '{unknown[0]}'; this model has tasks [{', '.join(self.specs)}]")

    def encode(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """Run the encoder: ``(last hidden state [B,T,H], pooler output [B,H] or None)``."""
        inputs = {k: batch[k] for k in self._encoder_inputs if k in batch and batch[k] is not None}
        out = self.encoder(**inputs, return_dict=True)
        return out.last_hidden_state, getattr(out, "pooler_output", None)

    def forward(self, task: str, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits of ``task``'s head (shape: see ``mtfuse.model.heads``)."""
        self._check_tasks([task])
        hidden, pooled = self.encode(batch)
        return self.heads[task](hidden, batch.get("attention_mask"), pooled)

    def forward_all(self, batch: Mapping[str, Tensor], tasks: list[str]) -> dict[str, Tensor]:
        """One encoder pass, then each head of ``tasks``: ``{task: logits}``."""
        self._check_tasks(list(tasks))
        hidden, pooled = self.encode(batch)
        mask = batch.get("attention_mask")
        return {t: self.heads[t](hidden, mask, pooled) for t in tasks}

    # ----------------------------------------------------------------------------------------- saving

    def heads_state_dict(self) -> dict[str, Tensor]:
        """All head tensors keyed ``"<task>.<parameter name>"`` (the heads.safetensors layout)."""
        return {
            f"{task}.{name}": t.detach().contiguous().cpu()
            for task, head in self.heads.items()
            for name, t in head.state_dict().items()
        }

    def save(self, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        """Write a model directory (see the module docstring). heads.json is written last: it marks a
        complete save."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        weights = directory / HEADS_WEIGHTS
        tmp = _tmp_name(weights)
        save_file(self.heads_state_dict(), str(tmp), metadata={"format": "pt"})
        os.replace(tmp, weights)
        meta = {"format_version": FORMAT_VERSION, "heads": [s.to_dict() for s in self.specs.values()]}
        _write_atomic(directory / HEADS_JSON, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> tuple[MultiTaskModel, PreTrainedTokenizerBase | None]:
        """Read a model directory written by :meth:`save`: ``(model in eval mode, tokenizer or None)``.

        The tokenizer is None when the directory holds no tokenizer files. Tensors are read with safetensors
        only (no pickle).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise MtfuseError(f"{directory}: not a model directory (no such directory)")
        specs = read_head_specs(directory / HEADS_JSON)
        weights_path = directory / HEADS_WEIGHTS
        if not weights_path.is_file():
            raise MtfuseError(f"{weights_path}: missing (a model directory needs {HEADS_WEIGHTS})")
        if not (directory / "config.json").is_file():
            raise MtfuseError(f"{directory / 'config.json'}: missing (the encoder's Hugging Face config)")
        try:
            encoder = AutoModel.from_pretrained(str(directory))
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MtfuseError(f"{directory}: could not load the encoder: {msg}") from e
        try:
            model = cls.build(encoder, specs)
        except MtfuseError as e:  # e.g. an unknown head or pooling name in heads.json
            raise MtfuseError(f"{directory / HEADS_JSON}: {e}") from None
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise MtfuseError(f"{weights_path}: not a readable safetensors file ({e})") from None
        model._load_heads(tensors, weights_path)
        tokenizer = None
        if any((directory / f).is_file() for f in _TOKENIZER_FILES):
            tokenizer = load_tokenizer(str(directory))
        model.eval()  # as from_pretrained does: dropout off until the caller asks for train()
        return model, tokenizer

    def _load_heads(self, tensors: dict[str, Tensor], source: Path) -> None:
        expected = {
            f"{task}.{name}": t for task, head in self.heads.items() for name, t in head.state_dict().items()
        }
        missing = [k for k in expected if k not in tensors]
        if missing:
            raise MtfuseError(f"{source}: missing tensor '{missing[0]}' (heads.json declares it)")
        extra = sorted(set(tensors) - set(expected))
        if extra:
            raise MtfuseError(f"{source}: unexpected tensor '{extra[0]}' (no head in heads.json has it)")
        for key, ref in expected.items():
            if tensors[key].shape != ref.shape:
                raise MtfuseError(
                    f"{source}: tensor '{key}' has shape {list(tensors[key].shape)}, "
                    f"heads.json implies {list(ref.shape)}"
                )
        with torch.no_grad():
            for task, head in self.heads.items():
                prefix = f"{task}."
                state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                # keys and shapes are checked above; copy_ casts to the head's (encoder's) dtype and device
                head.load_state_dict(state, strict=True)


def read_head_specs(path: str | Path) -> dict[str, HeadSpec]:
    """Parse heads.json into ``{task: HeadSpec}``; every problem names the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise MtfuseError(
            f"{path}: missing (not an mtfuse model directory? {HEADS_JSON} describes the heads)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtfuseError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise MtfuseError(f"{path}: expected a JSON object with 'format_version' and 'heads'")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise MtfuseError(
            f"{where(path, field='format_version')}: expected {FORMAT_VERSION}, got {version!r} "
            "(written by another mtfuse version?)"
        )
    heads = raw.get("heads")
    if not isinstance(heads, list):
        raise MtfuseError(f"{where(path, field='heads')}: expected a list of head specs")
    specs: dict[str, HeadSpec] = {}
    for i, item in enumerate(heads):
        spec = HeadSpec.from_dict(item, source=f"{path} heads[{i}]")
        if spec.task in specs:
            raise MtfuseError(f"{path} heads[{i}]: task '{spec.task}' appears twice")
        specs[spec.task] = spec
    return specs


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_atomic(path: Path, text: str) -> None:
    # Write then rename: a reader never sees half a file, even if the writer is killed.
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
