"""One shared encoder, one head per task, and a sharing architecture between them.

``MultiTaskModel(encoder, heads, specs, sharing=None)``: ``encoder`` is any Hugging Face
``PreTrainedModel`` that returns ``last_hidden_state`` (and ``pooler_output`` when it has a pooler); ``heads``
is an ``nn.ModuleDict`` task -> head (see ``mtfuse.model.heads``); ``specs`` describes each head so it can be
rebuilt from disk; ``sharing`` (``mtfuse.model.sharing``; default hard sharing) decides which encoder
parameters each task uses. ``forward(task, batch)`` runs one task; ``forward_all(batch, tasks)`` runs the
encoder once (once per task when the sharing method makes the encoder differ per task: adapters, soft), then
every listed head.

A head reads the encoder's last hidden state, or the hidden state of its spec's ``layer`` (hierarchical
sharing: ``hidden_states[layer]``, 0 = embeddings, negative = from the top). ``pooler`` pooling then applies
the encoder's own pooler module to what the head reads.

A saved model directory holds:

- ``config.json`` + ``model.safetensors``: the encoder, loadable with plain ``AutoModel.from_pretrained``
  (under adapters: the base encoder, without them). An encoder-decoder checkpoint (T5, BART...:
  ``mtfuse.model.seq2seq``) keeps its own tensor names: its encoder stack, plus its decoder and LM head
  when the generation tasks share them (``model.decoder: shared``; then ``AutoModelForSeq2SeqLM`` loads the
  folder, ``generation_config.json`` included)
- tokenizer files (when a tokenizer was given to :meth:`MultiTaskModel.save`)
- ``heads.safetensors``: every head tensor, keyed ``"<task>.<parameter name>"``
- ``heads.json``: ``{"format_version": 1, "heads": [HeadSpec as a dict, ...]}`` (``layer`` only when set)
- ``hf/<task>/``: each generation task with its own decoder as plain transformers loads it
  (``EncoderDecoderModel`` for a warm-started BERT decoder, ``AutoModelForSeq2SeqLM`` for T5 / BART...),
  with the tokenizer files (hard sharing only: other methods change the encoder per task)
- other than hard sharing: ``sharing.json`` (``{"format_version": 1, "method": ..., "params": {...}}``) and
  the method's tensors: ``sharing.safetensors`` (soft: per-task layer copies; mmoe: experts and gates) or
  ``adapters/<task>/`` (peft ``save_pretrained`` layout). A hard-sharing directory has neither: it is
  byte-for-byte what mtfuse wrote before sharing methods existed.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mtfuse import rundir
from mtfuse.errors import MtfuseError, where
from mtfuse.model import seq2seq
from mtfuse.model.encoder import load_saved_encoder, load_tokenizer
from mtfuse.model.heads import build_head
from mtfuse.model.lstm import is_lstm_config
from mtfuse.model.sharing import SHARING_JSON, SHARING_WEIGHTS, Sharing, build_sharing
from mtfuse.model.sharing.adapters import ADAPTERS_DIR

HEADS_JSON = "heads.json"
HEADS_WEIGHTS = "heads.safetensors"
HF_DIR = rundir.HF  # hf/<task>/: a generation task's model as plain transformers loads it
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
    layer: int | None = None  # the encoder hidden state the head reads (hidden_states index); None: the last
    # regression: the train targets' mean and standard deviation (the head learns on standardised targets)
    target_mean: float | None = None
    target_std: float | None = None
    # a decoder head (generation): its architecture, Hugging Face config and special token ids (JSON)
    decoder: dict[str, Any] | None = None
    # a masked-LM head: its transform's activation and LayerNorm epsilon (the encoder's; JSON)
    lm_head: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # heads.json stays as it was where unused
        for key in ("layer", "target_mean", "target_std", "decoder", "lm_head"):
            if out[key] is None:
                del out[key]
        return out

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
        layer = raw.get("layer")
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
            raise MtfuseError(f"{where(source, field='layer')}: expected an integer or null, got {layer!r}")
        stats = {}
        for key in ("target_mean", "target_std"):
            value = raw.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise MtfuseError(f"{where(source, field=key)}: expected a number or null, got {value!r}")
            stats[key] = None if value is None else float(value)
        objects = {}
        for key in ("decoder", "lm_head"):
            value = raw.get(key)
            if value is not None and not isinstance(value, dict):
                raise MtfuseError(f"{where(source, field=key)}: expected an object or null, got {value!r}")
            objects[key] = value
        return cls(
            **objects,
            **stats,
            task=raw["task"],
            task_type=raw["task_type"],
            head=raw["head"],
            num_outputs=raw["num_outputs"],
            pooling=raw["pooling"],
            dropout=float(raw["dropout"]),
            labels=list(labels) if labels is not None else None,
            layer=layer,
        )


class MultiTaskModel(nn.Module):
    """A shared encoder plus ``heads[task]`` for every task in ``specs``, shared as ``sharing`` says."""

    def __init__(
        self,
        encoder: PreTrainedModel,
        heads: nn.ModuleDict,
        specs: Mapping[str, HeadSpec],
        sharing: Sharing | None = None,
    ) -> None:
        super().__init__()
        if set(heads.keys()) != set(specs):
            raise MtfuseError(
                f"heads {sorted(heads.keys())} and head specs {sorted(specs)} name different tasks"
            )
        for task, spec in specs.items():
            if spec.task != task:
                raise MtfuseError(f"head spec stored under task '{task}' says task '{spec.task}'")
        _check_layers(encoder, specs)
        if sharing is None:
            sharing = build_sharing(encoder, list(specs))
        elif set(sharing.tasks) != set(specs):
            raise MtfuseError(f"sharing tasks {sorted(sharing.tasks)} and head specs {sorted(specs)} differ")
        if seq2seq.is_seq2seq(encoder) and not any(
            getattr(h, "shared_decoder", False) for h in heads.values()
        ):  # no head decodes with the shared module's decoder (their own copies were taken when built)
            seq2seq.drop_decoder(encoder)
        self.encoder = encoder
        self.heads = heads
        self.sharing = sharing
        self.specs: dict[str, HeadSpec] = dict(specs)
        params = inspect.signature(seq2seq.encoder_stack(encoder).forward).parameters
        self._encoder_inputs = tuple(k for k in ENCODER_INPUTS if k in params)

    @classmethod
    def build(
        cls, encoder: PreTrainedModel, specs: Mapping[str, HeadSpec], sharing: Any = None
    ) -> MultiTaskModel:
        """Create fresh heads (from ``HEADS``) and the sharing architecture on the encoder's device and in its
        dtype. ``sharing``: the ``model.sharing`` config section, or a dict ``{"method": ..., **params}``, or
        None for hard sharing. Heads are initialised first, so under hard sharing they draw the same random
        numbers as before sharing methods existed."""
        heads = _new_heads(encoder, specs)
        for head in heads.values():  # e.g. a decoder starts from the encoder's weights (Rothe et al. 2020)
            if hasattr(head, "warm_start"):
                head.warm_start(encoder)
        _check_layers(encoder, specs)
        return cls(encoder, heads, specs, _new_sharing(encoder, specs, sharing))

    @property
    def tasks(self) -> list[str]:
        return list(self.specs)

    def _check_tasks(self, tasks: list[str]) -> None:
        unknown = [t for t in tasks if t not in self.specs]
        if unknown:
            raise MtfuseError(f"unknown task '{unknown[0]}'; this model has tasks [{', '.join(self.specs)}]")

    # --------------------------------------------------------------------------------------------- forward

    def _encoder_pass(self, batch: Mapping[str, Tensor], hidden_states: bool) -> Any:
        inputs = {k: batch[k] for k in self._encoder_inputs if k in batch and batch[k] is not None}
        encoder = seq2seq.encoder_stack(self.encoder)  # an encoder-decoder's encoder stack; else itself
        if hidden_states:
            return encoder(**inputs, output_hidden_states=True, return_dict=True)
        return encoder(**inputs, return_dict=True)

    def _features(
        self, task: str, out: Any, attention_mask: Tensor | None, cache: dict[str, Any]
    ) -> tuple[Tensor, Tensor | None]:
        """``(hidden states, pooled)`` that ``task``'s head reads from one encoder output."""
        spec = self.specs[task]
        hidden = out.last_hidden_state if spec.layer is None else out.hidden_states[spec.layer]
        hidden = self.sharing.transform(task, hidden, attention_mask, cache)
        if spec.layer is None and not self.sharing.transforms_hidden:
            return hidden, getattr(out, "pooler_output", None)
        pooler = getattr(self.encoder, "pooler", None)
        if spec.pooling == "pooler" and isinstance(pooler, nn.Module):
            return hidden, pooler(hidden)  # the encoder's own pooler, on what this head reads
        return hidden, None

    def _run(self, tasks: list[str], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        mask = batch.get("attention_mask")
        logits: dict[str, Tensor] = {}
        for active, group in self.sharing.passes(tasks):
            with self.sharing.activate(active):
                out = self._encoder_pass(batch, any(self.specs[t].layer is not None for t in group))
            # one cache per hidden-state tensor read in this pass: work the tasks reading it can share
            caches: dict[int | None, dict[str, Any]] = {}
            for t in group:
                hidden, pooled = self._features(t, out, mask, caches.setdefault(self.specs[t].layer, {}))
                head = self.heads[t]
                if getattr(head, "takes_batch", False):  # e.g. a decoder reads the batch's target ids
                    logits[t] = head(hidden, mask, pooled, batch=batch)
                else:
                    logits[t] = head(hidden, mask, pooled)
        return {t: logits[t] for t in tasks}

    def encode(self, batch: Mapping[str, Tensor], task: str | None = None) -> tuple[Tensor, Tensor | None]:
        """``(hidden states [B,T,H], pooled [B,H] or None)``. ``task=None``: the shared encoder's last hidden
        state and pooler output (under adapters: with adapters off; under soft sharing: the shared layers);
        with a task: what that task's head reads (its adapter, layer copies, layer, experts)."""
        if task is None:
            with self.sharing.activate(None):
                out = self._encoder_pass(batch, False)
            return out.last_hidden_state, getattr(out, "pooler_output", None)
        self._check_tasks([task])
        spec = self.specs[task]
        with self.sharing.activate(task if self.sharing.per_task_encoder else None):
            out = self._encoder_pass(batch, spec.layer is not None)
        return self._features(task, out, batch.get("attention_mask"), {})

    def forward(self, task: str, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits of ``task``'s head (shape: see ``mtfuse.model.heads``)."""
        self._check_tasks([task])
        return self._run([task], batch)[task]

    def forward_all(self, batch: Mapping[str, Tensor], tasks: list[str]) -> dict[str, Tensor]:
        """``{task: logits}`` for each of ``tasks``: one encoder pass under hard sharing and mmoe, one per
        task under adapters and soft sharing."""
        self._check_tasks(list(tasks))
        return self._run(list(tasks), batch)

    # -------------------------------------------------------------------------------------------- training

    def extra_loss(self) -> Tensor | None:
        """The sharing method's regulariser (soft: ``penalty * sum_t ||theta_t - theta_s||^2``; adapters with
        ``delta_penalty``), to add to the training loss; None when the method has none."""
        return self.sharing.extra_loss()

    def add_extra_loss_grad(self, scale: float = 1.0) -> float | None:
        """Add ``scale *`` the gradient of :meth:`extra_loss` to the parameters' ``.grad``; return its value.

        For loops that cannot add the regulariser to the back-propagated loss: under DDP (its parameters are
        used outside the forward pass), or after a gradient-level weighting method wrote ``.grad``. Call it
        once per optimizer step after the backward passes and before clipping; ``scale`` = the loss scale of
        an fp16 GradScaler (1 otherwise). Every process computes the same value, so nothing is all-reduced.
        """
        loss = self.extra_loss()
        if loss is None:
            return None
        params = [p for p in self.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is None:
                    continue
                g = g * scale if scale != 1.0 else g
                if p.grad is None:
                    p.grad = g.to(p.dtype)
                else:
                    p.grad.add_(g.to(p.grad.dtype))
        return float(loss.detach())

    def shared_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Trainable parameters every task uses (names as in ``named_parameters()``): the encoder under hard
        sharing and mmoe (+ the shared experts); the encoder without the copied layers under soft sharing
        (their shared centre only gets the penalty's gradient); the base encoder under adapters (nothing if
        it is frozen)."""
        return [(n, p) for n, p in self.sharing.shared_named_parameters() if p.requires_grad]

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters of :meth:`shared_named_parameters` (what gradient-level weighting methods use)."""
        return [p for _, p in self.shared_named_parameters()]

    def task_named_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        """Trainable parameters only ``task`` uses: its head + its adapter, layer copies, gate and experts."""
        self._check_tasks([task])
        encoder = {id(p) for p in self.encoder.parameters()}  # a tied MLM decoder is the encoder's embeddings
        own = [
            (f"heads.{task}.{n}", p) for n, p in self.heads[task].named_parameters() if id(p) not in encoder
        ]
        own += list(self.sharing.task_named_parameters(task))
        return [(n, p) for n, p in own if p.requires_grad]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return [p for _, p in self.task_named_parameters(task)]

    # ---------------------------------------------------------------------------------------------- saving

    def heads_state_dict(self) -> dict[str, Tensor]:
        """All head tensors keyed ``"<task>.<parameter name>"`` (the heads.safetensors layout)."""
        return {
            f"{task}.{name}": t.detach().contiguous().cpu()
            for task, head in self.heads.items()
            for name, t in head.state_dict().items()
        }

    def save(
        self,
        directory: str | Path,
        tokenizer: PreTrainedTokenizerBase | None = None,
        hf_copies: bool = True,
    ) -> None:
        """Write a model directory (see the module docstring); ``hf_copies``: also ``hf/<task>/`` (see
        :meth:`save_hf`). heads.json is written last: it marks a complete save."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        encoder_state = self.sharing.encoder_state_dict()
        for head in self.heads.values():  # the shared decoder's decoding tokens: generation_config.json
            if getattr(head, "shared_decoder", False):
                seq2seq.set_generation_tokens(self.encoder, head.generation_tokens())
        if encoder_state is None:
            self.encoder.save_pretrained(directory)
        else:  # e.g. the base encoder without the adapters peft injected into it
            self.encoder.save_pretrained(directory, state_dict=encoder_state)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        weights = directory / HEADS_WEIGHTS
        tmp = _tmp_name(weights)
        save_file(self.heads_state_dict(), str(tmp), metadata={"format": "pt"})
        os.replace(tmp, weights)
        for stale in (SHARING_JSON, SHARING_WEIGHTS):  # from an earlier save into this directory
            (directory / stale).unlink(missing_ok=True)
        for stale_dir in (ADAPTERS_DIR, HF_DIR):
            if (directory / stale_dir).is_dir():
                shutil.rmtree(directory / stale_dir)
        if self.sharing.method == "hard":
            if hf_copies:
                self.save_hf(directory / HF_DIR, tokenizer)
        else:
            self.sharing.save(directory)
            _write_atomic(directory / SHARING_JSON, json.dumps(self.sharing.describe(), indent=2) + "\n")
        meta = {"format_version": FORMAT_VERSION, "heads": [s.to_dict() for s in self.specs.values()]}
        _write_atomic(directory / HEADS_JSON, json.dumps(meta, indent=2) + "\n")

    def save_hf(self, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> list[str]:
        """Write ``directory/<task>/`` for every task whose head has its own decoder (``save_hf``): the task's
        encoder-decoder as plain transformers loads it (``EncoderDecoderModel`` or
        ``AutoModelForSeq2SeqLM.from_pretrained``, then ``generate``; a source needs the task's prefix), with
        the tokenizer. A decoder the tasks share is the model directory itself. Returns the tasks written."""
        written = []
        for task, head in self.heads.items():
            if not hasattr(head, "save_hf") or getattr(head, "shared_decoder", False):
                continue
            target = rundir.inside(Path(directory), task)
            head.save_hf(self.encoder, target)
            if tokenizer is not None:
                tokenizer.save_pretrained(target)
            written.append(task)
        return written

    @classmethod
    def load(
        cls, directory: str | Path, require_tokenizer: bool = False
    ) -> tuple[MultiTaskModel, PreTrainedTokenizerBase | None]:
        """Read a model directory written by :meth:`save`: ``(model in eval mode, tokenizer or None)``.

        The tokenizer is None when the directory holds no tokenizer files. Tensors are read with safetensors
        only (no pickle).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise MtfuseError(f"{directory}: not a model directory (no such directory)")
        specs = read_head_specs(directory / HEADS_JSON)
        sharing_spec = read_sharing_spec(directory / SHARING_JSON)
        weights_path = directory / HEADS_WEIGHTS
        if not weights_path.is_file():
            raise MtfuseError(f"{weights_path}: missing (a model directory needs {HEADS_WEIGHTS})")
        if not (directory / "config.json").is_file():
            raise MtfuseError(f"{directory / 'config.json'}: missing (the encoder's Hugging Face config)")
        encoder = load_saved_encoder(directory)
        try:  # e.g. an unknown head or pooling name, or a layer this encoder does not have, in heads.json
            heads = _new_heads(encoder, specs)
            _check_layers(encoder, specs)
        except MtfuseError as e:
            raise MtfuseError(f"{directory / HEADS_JSON}: {e}") from None
        try:
            sharing = _new_sharing(encoder, specs, sharing_spec)
        except MtfuseError as e:
            raise MtfuseError(f"{directory / SHARING_JSON}: {e}") from None
        model = cls(encoder, heads, specs, sharing)
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise MtfuseError(f"{weights_path}: not a readable safetensors file ({e})") from None
        model._load_heads(tensors, weights_path)
        model.sharing.load(directory)
        tokenizer = None
        if any((directory / f).is_file() for f in _TOKENIZER_FILES):
            tokenizer = load_tokenizer(str(directory))
        elif require_tokenizer:
            raise MtfuseError(
                f"{directory}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}); the run directory is incomplete"
            )
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


def _new_heads(encoder: PreTrainedModel, specs: Mapping[str, HeadSpec]) -> nn.ModuleDict:
    """Fresh heads (from ``HEADS``) on the encoder's device and in its dtype."""
    config = encoder.config
    init_range = float(getattr(config, "initializer_range", 0.02))
    heads = nn.ModuleDict()
    for task, spec in specs.items():
        head = build_head(spec, config.hidden_size, init_range)  # with what the head reads from its spec
        try:
            heads[task] = head
        except KeyError as e:  # '.' in the name, or a ModuleDict attribute such as 'update' or 'keys'
            raise MtfuseError(f"task name '{task}' cannot name a head ({e}); rename the task") from None
    _to_encoder(heads, encoder)
    for head in heads.values():  # after the move: a tied tensor is the encoder's own, where it already is
        if hasattr(head, "tie"):  # e.g. an MLM decoder is the encoder's word embeddings
            head.tie(encoder)
    return heads


def _new_sharing(encoder: PreTrainedModel, specs: Mapping[str, HeadSpec], sharing: Any) -> Sharing:
    """The sharing architecture (``mtfuse.model.sharing``) on the encoder's device and in its dtype."""
    module = build_sharing(encoder, list(specs), sharing)
    _to_encoder(module, encoder)
    return module


def _to_encoder(module: nn.Module, encoder: PreTrainedModel) -> None:
    param = next(encoder.parameters(), None)
    if param is not None:
        module.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)


def _check_layers(encoder: PreTrainedModel, specs: Mapping[str, HeadSpec]) -> None:
    """Every head's ``layer`` indexes the encoder's hidden states (0 = embeddings .. L = last; or < 0)."""
    n = getattr(encoder.config, "num_hidden_layers", None)
    for task, spec in specs.items():
        if spec.layer is None:
            continue
        if isinstance(spec.layer, bool) or not isinstance(spec.layer, int):
            raise MtfuseError(f"task '{task}': layer must be an integer, got {spec.layer!r}")
        if isinstance(n, int) and not -(n + 1) <= spec.layer <= n:
            raise MtfuseError(
                f"task '{task}': layer {spec.layer} is out of range; this encoder has hidden states 0..{n} "
                f"(0 = embeddings, {n} = last layer; negative counts from the top)"
            )
        config = encoder.config
        if (
            is_lstm_config(config)
            and spec.layer % (n + 1) == 0
            and config.embedding_dim != config.hidden_size
        ):
            raise MtfuseError(
                f"task '{task}': layer {spec.layer} is the lstm encoder's embeddings, {config.embedding_dim} "
                f"wide where heads read {config.hidden_size}; choose a layer 1..{n}"
            )


def read_sharing_spec(path: str | Path) -> dict[str, Any] | None:
    """Parse sharing.json into ``{"method": ..., **params}``; None when the file is absent (hard sharing)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtfuseError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise MtfuseError(f"{path}: expected a JSON object with 'format_version', 'method' and 'params'")
    version = raw.get("format_version")
    if version != 1:
        raise MtfuseError(
            f"{where(path, field='format_version')}: expected 1, got {version!r} "
            "(written by another mtfuse version?)"
        )
    method, params = raw.get("method"), raw.get("params", {})
    if not isinstance(method, str):
        raise MtfuseError(f"{where(path, field='method')}: expected a sharing method name, got {method!r}")
    if not isinstance(params, dict) or "method" in params:
        raise MtfuseError(f"{where(path, field='params')}: expected an object of the method's parameters")
    return {"method": method, **params}


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_atomic(path: Path, text: str) -> None:
    # Write then rename: a reader never sees half a file, even if the writer is killed.
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
