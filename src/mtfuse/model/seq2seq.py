"""Encoder-decoder checkpoints (``AutoModelForSeq2SeqLM``: T5 / mT5, BART / mBART, Marian, Pegasus...) as the
shared encoder of a multi-task model.

The shared module (``MultiTaskModel.encoder``) is the checkpoint's whole ``AutoModelForSeq2SeqLM`` model, so
that its tensors keep the checkpoint's own names (``shared.weight``, ``encoder.block.0...`` for T5;
``model.shared.weight``, ``model.encoder.layers.0...`` for BART): the pretrained checkpoint is the base of a
merge without renaming, and ``save_pretrained`` writes it. Every task reads its encoder stack
(:func:`encoder_stack`). Its decoder and LM head stay in it only when the generation tasks share one
(``model.decoder: shared``, T5-style: a task prefix on the source tells them apart, Raffel et al. 2020); with
``per_task`` (the default) each generation task's head holds its own copy (``mtfuse.model.seq2seq_head``) and
the shared module's are removed (:func:`drop_decoder`), so no tensor is stored, trained or merged twice.

A saved ``model/`` therefore holds the encoder stack only (``per_task``: ``T5EncoderModel.from_pretrained``
reads a T5 one) or the whole checkpoint (``shared``: ``AutoModelForSeq2SeqLM.from_pretrained`` reads it);
:func:`load_saved` reads both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtfuse.errors import MtfuseError

#: the generation settings of a checkpoint that decoding must keep (its own start token and the like)
TOKEN_FIELDS = (
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)


class Removed(nn.Module):
    """Stands where a part of a seq2seq model was taken out (the encoder stack of a task's own decoder, which
    the shared encoder replaces; the decoder of the shared module, which the tasks' heads hold). It has no
    tensors; calling it is a bug, so it says where the part lives."""

    main_input_name = "input_ids"  # what generate() asks of an encoder before it uses encoder_outputs

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise MtfuseError(f"this part of the seq2seq model is not here: {self.where}")

    def extra_repr(self) -> str:
        return self.where


def is_seq2seq_config(config: Any) -> bool:
    """True for the config of a checkpoint ``AutoModelForSeq2SeqLM`` builds (T5, BART, Marian, Pegasus...),
    except transformers' generic ``EncoderDecoderModel`` (two checkpoints glued together)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if isinstance(config, dict):
        model_type = config.get("model_type")
    return model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES and model_type != "encoder-decoder"


def is_seq2seq(model: nn.Module) -> bool:
    return is_seq2seq_config(getattr(model, "config", None))


def encoder_stack(model: nn.Module) -> nn.Module:
    """The module every task reads: the encoder stack of a seq2seq model, else the model itself."""
    return model.get_encoder() if is_seq2seq(model) else model  # type: ignore[operator]


def has_decoder(model: nn.Module) -> bool:
    """Whether a seq2seq model still holds its decoder (see :func:`drop_decoder`)."""
    return is_seq2seq(model) and not isinstance(model.get_decoder(), Removed)  # type: ignore[operator]


def module_path(root: nn.Module, module: nn.Module) -> str:
    for name, m in root.named_modules():
        if m is module:
            return name
    raise MtfuseError(f"{type(module).__name__} is not a part of {type(root).__name__}")


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, last = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, last, module)


def drop_decoder(model: nn.Module) -> None:
    """Take the decoder, the LM head and any logits bias (BART's ``final_logits_bias``) out of a seq2seq
    model: what is left is its encoder stack and the embeddings it reads, under their checkpoint names."""
    if not has_decoder(model):
        return
    where = "each generation task's head holds its own decoder (model.decoder: per_task)"
    decoder = model.get_decoder()  # type: ignore[operator]
    head = model.get_output_embeddings()  # type: ignore[operator]
    set_module(model, module_path(model, decoder), Removed(where))
    if isinstance(head, nn.Module):
        set_module(model, module_path(model, head), Removed(where))
    for name, _ in list(model.named_buffers(recurse=False)):  # BART, Marian: a bias on the LM logits
        delattr(model, name)


def remove_encoder(model: nn.Module) -> str:
    """Replace a seq2seq model's encoder stack with :class:`Removed` (the shared encoder runs instead);
    return where it was (``encoder``, ``model.encoder``)."""
    path = module_path(model, model.get_encoder())  # type: ignore[operator]
    set_module(model, path, Removed("the shared encoder (MultiTaskModel.encoder) reads the source"))
    return path


def config_from_dict(raw: dict[str, Any]) -> Any:
    """A checkpoint's Hugging Face config rebuilt from its ``to_dict()`` (a head spec keeps it as JSON)."""
    from transformers import AutoConfig

    values = dict(raw)
    model_type = values.pop("model_type", None)
    if not isinstance(model_type, str):
        raise MtfuseError("a seq2seq decoder config needs its 'model_type'")
    try:
        return AutoConfig.for_model(model_type, **values)
    except (ValueError, KeyError, TypeError) as e:
        raise MtfuseError(f"seq2seq decoder config of model type '{model_type}': {e}") from None


def build(config: Any) -> nn.Module:
    """A randomly initialised ``AutoModelForSeq2SeqLM`` of ``config`` (in the config's dtype)."""
    from transformers import AutoModelForSeq2SeqLM

    dtype = getattr(config, "dtype", None)  # a torch.dtype or its name ("float32"); None: the default
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return AutoModelForSeq2SeqLM.from_config(config, dtype=dtype if isinstance(dtype, torch.dtype) else None)


def generation_tokens(config: Any) -> dict[str, Any]:
    """The checkpoint's own token settings for decoding (``TOKEN_FIELDS``: decoder start, end, padding,
    forced first / last tokens): from its ``generation_config.json`` when the checkpoint has one (local folder
    or local hub cache), else from its config. Unset fields are left out."""
    from mtfuse.model.encoder import _checkpoint_file

    found: dict[str, Any] = {}
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for key in TOKEN_FIELDS:
        if raw.get(key) is not None:
            found[key] = raw[key]
    source = str(getattr(config, "_name_or_path", "") or "")
    path = _checkpoint_file(source, "generation_config.json") if source else None
    if path is not None:
        try:
            gen = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            gen = {}
        for key in TOKEN_FIELDS:
            if isinstance(gen, dict) and gen.get(key) is not None:
                found[key] = gen[key]
    if found.get("decoder_start_token_id") is None:
        raise MtfuseError(
            f"the seq2seq checkpoint ({getattr(config, 'model_type', '?')}) has no decoder_start_token_id "
            "in its config or generation_config.json; decoding cannot start"
        )
    if found.get("eos_token_id") is None:
        raise MtfuseError("the seq2seq checkpoint has no eos_token_id; decoding cannot stop")
    return found


def set_generation_tokens(model: nn.Module, tokens: dict[str, Any]) -> None:
    """Put the checkpoint's decoding tokens into ``model.generation_config`` (what ``save_pretrained`` writes
    to ``generation_config.json``, so plain transformers' ``generate`` starts as mtfuse does)."""
    gc = getattr(model, "generation_config", None)
    if gc is None:
        return
    for key, value in tokens.items():
        setattr(gc, key, value)


def load_pretrained(path: str, local_files_only: bool) -> nn.Module:
    """The whole checkpoint (``AutoModelForSeq2SeqLM.from_pretrained``); the decoder stays until the model
    is built (its heads may copy it)."""
    from transformers import AutoModelForSeq2SeqLM

    return freeze_rebuilt(AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=local_files_only))


def freeze_rebuilt(model: nn.Module) -> nn.Module:
    """Freeze the tensors the architecture rebuilds itself and never saves (``_keys_to_ignore_on_save``:
    Marian's sinusoidal positions). ``from_pretrained`` hands them back trainable (transformers 5), and a
    trained copy would be lost at the first save: the reloaded model would decode differently."""
    rebuilt = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_save", None) or ()]
    for name, param in model.named_parameters():
        if any(r.search(name) for r in rebuilt):
            param.requires_grad_(False)
    return model


def load_saved(directory: Path, config: Any) -> nn.Module:
    """A seq2seq shared module as :meth:`MultiTaskModel.save` wrote it: the encoder stack only (its decoder
    removed) or the whole model, from ``model.safetensors``. Tensors tied to a stored one (the encoder's word
    embeddings are T5's ``shared.weight``) may be absent; any other missing or unexpected tensor is an error
    naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / "model.safetensors"
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MtfuseError(f"{path}: not a readable safetensors file ({e})") from None
    model = build(config)
    decoder_path = module_path(model, model.get_decoder())  # type: ignore[operator]
    if not any(k.startswith(decoder_path + ".") for k in tensors):
        drop_decoder(model)  # saved without it (model.decoder: per_task)
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise MtfuseError(
            f"{path}: unexpected tensor '{result.unexpected_keys[0]}' for {type(model).__name__}"
        )
    state = model.state_dict()
    stored = {state[k].data_ptr() for k in tensors if k in state}
    # what the architecture rebuilds itself and save_pretrained leaves out (Marian's sinusoidal positions)
    rebuilt = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_missing", None) or ()]
    missing = [
        k
        for k in result.missing_keys
        if state[k].data_ptr() not in stored and not any(r.search(k) for r in rebuilt)
    ]
    if missing:
        raise MtfuseError(f"{path}: missing tensor '{missing[0]}' of {type(model).__name__}")
    return model.eval()
