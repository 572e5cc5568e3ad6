"""``seq2seq_lm``: a generation task's head when the shared encoder is an encoder-decoder checkpoint.

The head is the checkpoint's own pretrained decoder and LM head (T5, Raffel et al. 2020, "Exploring the Limits
of Transfer Learning with a Unified Text-to-Text Transformer", JMLR; BART, Lewis et al. 2020, "BART:
Denoising Sequence-to-Sequence Pre-training for Natural Language Generation, Translation, and
Comprehension", ACL; any ``AutoModelForSeq2SeqLM``), not a decoder warm-started from an encoder. It runs
through transformers: the head keeps an ``AutoModelForSeq2SeqLM`` whose encoder stack is taken out (the
shared encoder's hidden states go in as ``encoder_outputs``), so the forward pass (T5's output scaling, BART's
logits bias), the decoder inputs (``prepare_decoder_input_ids_from_labels``: the labels shifted right behind
the model's own ``decoder_start_token_id``) and ``generate`` are the model's own.

The word embeddings that the checkpoint ties between encoder, decoder and LM head stay one tensor: the head's
tied tensors are the shared encoder's input embeddings (:meth:`Seq2SeqLMHead.tie`), stored once, with the
encoder, and tied again on load. With ``model.decoder: shared`` the head holds nothing: it decodes with the
decoder of the shared module (``mtfuse.model.seq2seq``), which every generation task uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.model import seq2seq
from mtfuse.model.heads import HEADS, _drop_tied, _tied_not_missing


@HEADS.register("seq2seq_lm")
class Seq2SeqLMHead(nn.Module):
    """Logits ``[B, L, V]`` of the checkpoint's decoder over the shared encoder's hidden states (teacher
    forcing). The spec's ``decoder`` holds ``arch: seq2seq``, the checkpoint's ``config``, its decoding
    ``generation`` tokens, ``shared`` (the shared module's decoder, or an own copy) and ``label_smoothing``.
    ``num_outputs`` is the vocabulary size; pooling and dropout are unused (the decoder has its own)."""

    takes_batch = True

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
        decoder: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        spec = decoder or {}
        if not isinstance(spec.get("config"), dict):
            raise ConfigError("a seq2seq_lm head needs its checkpoint's config (head spec field 'decoder')")
        if spec.get("arch", "seq2seq") != "seq2seq":
            raise ConfigError(f"seq2seq_lm: unknown decoder arch '{spec.get('arch')}'; choose from [seq2seq]")
        try:
            config = seq2seq.config_from_dict(spec["config"])
        except MtfuseError as e:
            raise ConfigError(f"seq2seq_lm: {e}") from None
        if not seq2seq.is_seq2seq_config(config):
            raise ConfigError(f"seq2seq_lm: model type '{config.model_type}' is not an encoder-decoder")
        if config.hidden_size != hidden_size or config.vocab_size != num_outputs:
            raise ConfigError(
                f"seq2seq_lm: decoder config (hidden {config.hidden_size}, vocabulary {config.vocab_size}) "
                f"does not fit the encoder (hidden {hidden_size}) and num_outputs={num_outputs}"
            )
        gen = dict(spec.get("generation") or {})
        for key in ("decoder_start_token_id", "eos_token_id"):
            if not isinstance(gen.get(key), (int, list)):
                raise ConfigError(f"seq2seq_lm: the head spec's decoder.generation has no '{key}'")
        eos = gen["eos_token_id"][0] if isinstance(gen["eos_token_id"], list) else gen["eos_token_id"]
        self.generation = gen
        self.tokens = {
            "start_token_id": int(gen["decoder_start_token_id"]),
            "eos_token_id": int(eos),
            "pad_token_id": int(gen.get("pad_token_id", eos)),
        }
        self.shared_decoder = bool(spec.get("shared", False))
        self.label_smoothing = float(spec.get("label_smoothing", 0.0))
        self._backbone: list[nn.Module] = []  # the shared module once tied (a list: not a submodule)
        #: tensors that are the shared encoder's word embeddings once tied: stored once, with the encoder
        self.TIED: tuple[str, ...] = ()
        self.warm_started = self.shared_decoder  # shared: the shared module's decoder is the checkpoint's
        if not self.shared_decoder:
            self.model = seq2seq.build(config)
            emb = self.model.get_input_embeddings().weight
            state = self.model.state_dict()
            self._encoder_path = seq2seq.remove_encoder(self.model)
            mine = self.model.state_dict()
            self.TIED = tuple(f"model.{k}" for k in mine if state[k].data_ptr() == emb.data_ptr())
            seq2seq.set_generation_tokens(self.model, gen)
        self._register_state_dict_hook(_drop_tied)
        self.register_load_state_dict_post_hook(_tied_not_missing)

    @classmethod
    def spec_kwargs(cls, spec: Any) -> dict[str, Any]:
        return {"decoder": getattr(spec, "decoder", None)}

    def loss_kwargs(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}

    def tie(self, encoder: nn.Module) -> None:
        """Make the tied tensors the shared encoder's input word embeddings (the same tensor); with
        ``shared``, use the shared module's decoder. Called whenever the model is built or loaded."""
        if self.shared_decoder:
            if not seq2seq.has_decoder(encoder):
                raise ConfigError(
                    "seq2seq_lm: the head uses the shared decoder (model.decoder: shared), but the shared "
                    "encoder has none (an encoder-decoder checkpoint saved with model.decoder: per_task?)"
                )
            self._backbone = [encoder]
            return
        emb = encoder.get_input_embeddings().weight  # type: ignore[operator]
        for name in self.TIED:
            parent, _, last = name.rpartition(".")
            owner = self.get_submodule(parent)
            if tuple(getattr(owner, last).shape) != tuple(emb.shape):
                raise ConfigError(
                    f"seq2seq_lm: the encoder's word embeddings are {list(emb.shape)}, the decoder's "
                    f"'{name}' is {list(getattr(owner, last).shape)}"
                )
            setattr(owner, last, emb)
        self._backbone = [encoder]

    def tie_targets(self) -> list[Tensor]:
        if self.shared_decoder or not self._backbone:
            return []
        return [self._backbone[0].get_input_embeddings().weight]  # type: ignore[operator]

    def warm_start(self, encoder: nn.Module) -> None:
        """Copy the checkpoint's decoder and LM head (the shared module still holds them while the model is
        built) into this head. Nothing to copy when the shared module has no decoder (a model loaded from a
        run directory, whose heads hold the trained decoders): :attr:`warm_started` then stays False."""
        if self.shared_decoder or not seq2seq.has_decoder(encoder):
            return
        theirs = encoder.state_dict()
        state = {}
        for key, t in self.model.state_dict().items():
            if f"model.{key}" in self.TIED:
                continue  # already the encoder's tensor
            if key not in theirs or tuple(theirs[key].shape) != tuple(t.shape):
                raise ConfigError(
                    f"seq2seq_lm: cannot take the decoder from the checkpoint ({type(encoder).__name__}): "
                    f"tensor '{key}' is missing or of another shape"
                )
            state[key] = theirs[key]
        self.model.load_state_dict(state, strict=False)  # copies into the head's dtype
        self.warm_started = True

    def seq2seq_view(self, encoder: nn.Module | None = None) -> Any:
        """The ``AutoModelForSeq2SeqLM`` that decoding calls ``generate`` on (with ``encoder_outputs``): this
        head's own model, or the shared module (``shared``)."""
        if self.shared_decoder:
            if encoder is None and not self._backbone:
                raise MtfuseError("seq2seq_lm: the shared decoder is not tied yet (MultiTaskModel ties it)")
            return encoder if encoder is not None else self._backbone[0]
        return self.model

    def generation_tokens(self) -> dict[str, Any]:
        """The checkpoint's decoding tokens, as ``transformers.GenerationConfig`` fields."""
        return dict(self.generation)

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        pooler_output: Tensor | None,
        batch: Any = None,
    ) -> Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        if batch is None or ("labels" not in batch and "decoder_input_ids" not in batch):
            raise MtfuseError("seq2seq_lm: the batch has no labels or decoder_input_ids (a generation batch)")
        model = self.seq2seq_view()
        labels = batch.get("labels")
        if labels is not None:  # the model's own shift (T5: behind the pad token; BART: behind </s>)
            dec = model.prepare_decoder_input_ids_from_labels(labels=labels)
        else:  # scoring a decoded prefix (it starts with the decoder start token)
            dec = batch["decoder_input_ids"]
        out = model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=attention_mask,
            decoder_input_ids=dec,
            decoder_attention_mask=batch.get("decoder_attention_mask"),
            use_cache=False,
            return_dict=True,
        )
        return out.logits

    def save_hf(self, encoder: nn.Module, directory: Path) -> None:
        """Write this task's model as plain transformers loads it (``AutoModelForSeq2SeqLM.from_pretrained``):
        the shared encoder stack put back in place of the removed one for the time of the save."""
        if self.shared_decoder:
            raise MtfuseError("seq2seq_lm: a shared decoder's model is the run's model/ folder itself")
        stack = seq2seq.encoder_stack(encoder)
        seq2seq.set_module(self.model, self._encoder_path, stack)
        try:
            self.model.save_pretrained(directory)
        finally:
            seq2seq.set_module(
                self.model, self._encoder_path, seq2seq.Removed("the shared encoder reads the source")
            )

    def extra_repr(self) -> str:
        return f"shared_decoder={self.shared_decoder}, label_smoothing={self.label_smoothing:g}"
