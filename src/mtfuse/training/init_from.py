"""``model.init_from: RUN_DIR``: start training from another run's weights instead of the pretrained encoder.

The encoder is the run's encoder (``RUN_DIR/model``, read from safetensors); a task that the run also has, with
the same head spec (type, head, labels, outputs, pooling, layer, decoder, lm_head), starts from that run's head, and
other tasks get fresh heads. This is how ``mtfuse finetune`` fine-tunes each task from a multi-task run
(MT-DNN, Liu et al. 2019), and ``mtfuse train CONFIG model.init_from=runs/x`` does the same for any config.

``model.name_or_path`` still names the pretrained model the tokenizer comes from; its architecture and
vocabulary must match the run's. Everything is checked before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PreTrainedModel

from mtfuse import rundir
from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.model import SHARING_JSON, HeadSpec, MultiTaskModel, load_tokenizer, read_head_specs
from mtfuse.model.encoder import ARCH_KEYS, load_saved_encoder

#: what makes two heads the same head: a head trained with other labels (or another type) is not reused
HEAD_KEYS = ("task_type", "head", "labels", "num_outputs", "pooling", "layer", "decoder", "lm_head")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")


@dataclass(frozen=True)
class InitSource:
    """A run directory to start from, checked: its model folder and head specs."""

    run_dir: Path
    model_dir: Path
    specs: dict[str, HeadSpec]


def read_init_source(run_dir: str | Path, field: str = "model.init_from") -> InitSource:
    """Check that ``run_dir`` holds a trained, hard-shared model in safetensors; errors name ``field``."""
    run = Path(run_dir)
    model_dir = run / rundir.MODEL
    if not run.is_dir():
        raise ConfigError(f"{field}: {run}: no such run directory")
    if not (model_dir / rundir.HEADS_JSON).is_file():
        raise ConfigError(
            f"{field}: {run}: not a run directory with a trained model (no {rundir.MODEL}/{rundir.HEADS_JSON})"
        )
    if (model_dir / SHARING_JSON).is_file():
        raise ConfigError(
            f"{field}: {run}: trained with a non-hard sharing method, whose task-specific parts (adapters, "
            "layer copies, experts) live outside the encoder; only hard-shared runs can be started from"
        )
    if not (model_dir / "model.safetensors").is_file():
        what = "a pickle (pytorch_model.bin)" if (model_dir / "pytorch_model.bin").exists() else "missing"
        raise ConfigError(
            f"{field}: {model_dir / 'model.safetensors'}: {what}; mtfuse reads safetensors only"
        )
    if not (model_dir / rundir.HEADS_WEIGHTS).is_file():
        raise ConfigError(f"{field}: {model_dir / rundir.HEADS_WEIGHTS}: missing")
    return InitSource(run, model_dir, read_head_specs(model_dir / rundir.HEADS_JSON))


def load_init_encoder(source: InitSource, pretrained_config: Any, tokenizer: Any) -> PreTrainedModel:
    """The source's encoder, after checking that it fits ``model.name_or_path`` (architecture, vocabulary)."""
    encoder = load_saved_encoder(source.model_dir, use_safetensors=True, local_files_only=True)
    for key in ARCH_KEYS:
        ours, theirs = getattr(pretrained_config, key, None), getattr(encoder.config, key, None)
        if ours != theirs:
            raise ConfigError(
                f"model.init_from: {source.model_dir / 'config.json'}: encoder '{key}' is {theirs!r} but "
                f"model.name_or_path has {ours!r}; start only from a run of the same pretrained model"
            )
    if any((source.model_dir / f).is_file() for f in _TOKENIZER_FILES):
        if load_tokenizer(str(source.model_dir)).get_vocab() != tokenizer.get_vocab():
            raise ConfigError(
                f"model.init_from: {source.model_dir}: its tokenizer vocabulary differs from "
                "model.name_or_path's; embeddings would map tokens to the wrong rows"
            )
    return encoder


def init_specs(specs: dict[str, HeadSpec], source: InitSource) -> dict[str, HeadSpec]:
    """``specs`` with every task the source also has checked against the source's head spec.

    A regression head keeps the source's target standardisation (its weights were trained on it)."""
    out = {}
    for task, spec in specs.items():
        old = source.specs.get(task)
        if old is None:
            out[task] = spec
            continue
        for key in HEAD_KEYS:
            mine, theirs = getattr(spec, key), getattr(old, key)
            if mine != theirs:
                raise ConfigError(
                    f"model.init_from: task '{task}': head '{key}' is {theirs!r} in "
                    f"{source.model_dir / rundir.HEADS_JSON} but {mine!r} here; its head cannot be reused "
                    "(rename the task to train it with a fresh head)"
                )
        out[task] = replace(spec, target_mean=old.target_mean, target_std=old.target_std)
    return out


def load_init_heads(model: MultiTaskModel, source: InitSource) -> list[str]:
    """Copy the source's heads into ``model``'s heads of the same tasks; return those tasks."""
    path = source.model_dir / rundir.HEADS_WEIGHTS
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MtfuseError(f"{path}: not a readable safetensors file ({e})") from None
    loaded = []
    for task, head in model.heads.items():
        if task not in source.specs:
            continue
        prefix = f"{task}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        expected = head.state_dict()
        if set(state) != set(expected):
            diff = sorted(set(state) ^ set(expected))
            raise MtfuseError(
                f"{path}: task '{task}': head tensors differ from this run's (e.g. '{diff[0]}')"
            )
        for name, ref in expected.items():
            if state[name].shape != ref.shape:
                raise MtfuseError(
                    f"{path}: task '{task}': tensor '{name}' has shape {list(state[name].shape)}, "
                    f"this run's head needs {list(ref.shape)}"
                )
        with torch.no_grad():
            head.load_state_dict(state, strict=True)  # copies into the head's dtype and device
        loaded.append(task)
    for task, head in model.heads.items():
        if task not in loaded and getattr(head, "warm_started", True) is False:
            raise ConfigError(
                f"model.init_from: task '{task}': its head starts from the pretrained checkpoint's decoder, "
                f"but {source.model_dir} keeps decoders in its task heads (model.decoder: per_task) and has "
                "no such task; start from model.name_or_path, or from a run with this task"
            )
    return loaded
