"""Task heads: small modules on top of the shared encoder, one per task, chosen by name from ``HEADS``.

Every head is built as ``cls(hidden_size, num_outputs, pooling, dropout, initializer_range=0.02, **extra)``
(``extra``: what ``cls.spec_kwargs(spec)`` reads from the head spec; :func:`build_head` does both) and called
as ``head(hidden [B,T,H], attention_mask [B,T], pooler_output [B,H] | None)`` (a head with
``takes_batch = True`` is also given ``batch=``, the whole collated batch: a decoder reads its target ids):

- ``classification``: pool -> dropout -> Linear(H, K): logits [B, K] (as ``BertForSequenceClassification``)
- ``regression``: the same with K = 1, squeezed: [B], in the targets' units (``target_mean + target_std z``:
  it learns on standardised targets, see :class:`RegressionHead`)
- ``multilabel``: the same as classification: one logit per label [B, K], for a sigmoid/BCE loss
- ``token_classification``: dropout -> Linear(H, K) on every position: [B, T, K]
  (as ``BertForTokenClassification``)
- ``multiple_choice``: one score per (context, choice) sequence, pool -> dropout -> Linear(H, 1), the
  ``[B * K, T]`` rows' scores reshaped to [B, K] with K = the number of choices (as ``BertForMultipleChoice``)
- ``intent_slots``: the intent (pooled, Linear(H, I)) at position 0 and slot logits (Linear(H, S)) at the
  other positions, in one tensor [B, T, I + S], each block masked off where it does not belong
- ``srl``: each position's state concatenated with the predicate's (marked by ``token_type_ids`` = 1 in the
  batch) -> dropout -> Linear(2H, K): [B, T, K] (Shi & Lin 2019)
- ``span_qa``: dropout -> Linear(H, 2) on every position: start / end logits [B, T, 2], padding masked
  (as ``BertForQuestionAnswering``)
- ``masked_lm``: dense -> activation -> LayerNorm -> a decoder tied to the encoder's input word embeddings,
  at the batch's ``mlm_mask`` positions: logits [N, V] (every position, [B, T, V], without a mask), as
  ``BertLMPredictionHead``; the checkpoint's own MLM head when it has one (:class:`MaskedLMHead`)

Pooling (:func:`pool`): ``pooler`` = the encoder's own pooler output (dense + tanh on [CLS], what Hugging
Face feeds its sequence classifier), ``cls`` = the hidden state at position 0, ``mean`` = the mean over real
tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.registry import Registry

POOLINGS = ("pooler", "cls", "mean")


def pool(hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None, how: str) -> Tensor:
    """Reduce ``hidden`` [B,T,H] to one vector per sequence [B,H]."""
    if how == "pooler":
        if pooler_output is None:
            raise MtfuseError(
                "pooling 'pooler' needs the encoder's pooler output, but this encoder has no pooler; "
                "use pooling cls or mean (model.pooling or the task's pooling)"
            )
        return pooler_output
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        # clamp: a row with no real token gives zeros rather than NaN
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    raise ConfigError(f"unknown pooling '{how}'; choose from [{', '.join(POOLINGS)}]")


class Head(nn.Module):
    """Base of all heads: dropout + one Linear layer, initialised as Hugging Face BERT does."""

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ConfigError(f"a head needs at least one output, got num_outputs={num_outputs}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_outputs)
        # BertPreTrainedModel._init_weights: normal(0, initializer_range) weights, zero bias
        nn.init.normal_(self.classifier.weight, mean=0.0, std=initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        raise NotImplementedError

    @classmethod
    def spec_kwargs(cls, spec: Any) -> dict[str, Any]:
        """Constructor arguments beyond the common five that this head reads from its spec (none here)."""
        return {}

    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the task type's ``loss(logits, labels, **kwargs)`` (none here)."""
        return {}


def build_head(spec: Any, hidden_size: int, initializer_range: float = 0.02) -> Head:
    """The head a spec describes (``spec.head``, ``num_outputs``, ``pooling``, ``dropout``, plus what the head
    class reads from it through ``spec_kwargs``, e.g. a regression head's ``target_mean`` / ``target_std``)."""
    cls = HEADS.get(spec.head)
    return cls(
        hidden_size, spec.num_outputs, spec.pooling, spec.dropout, initializer_range, **cls.spec_kwargs(spec)
    )


HEADS: Registry[type[Head]] = Registry("head")


@HEADS.register("classification")
class ClassificationHead(Head):
    """pool -> dropout -> Linear: logits [B, num_outputs]."""

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
    ) -> None:
        if pooling not in POOLINGS:  # fail at build time, not at the first batch
            raise ConfigError(f"unknown pooling '{pooling}'; choose from [{', '.join(POOLINGS)}]")
        super().__init__(hidden_size, num_outputs, pooling, dropout, initializer_range)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        pooled = pool(hidden, attention_mask, pooler_output, self.pooling)
        return self.classifier(self.dropout(pooled))


@HEADS.register("multilabel")
class MultiLabelHead(ClassificationHead):
    """Classification head read as independent per-label logits (sigmoid / BCE), [B, num_outputs]."""


@HEADS.register("regression")
class RegressionHead(ClassificationHead):
    """One score per sequence: [B] (with num_outputs > 1, one score per target: [B, num_outputs]).

    Learns on standardised targets and answers in the original units: the linear layer predicts ``z`` and the
    head returns ``target_mean + target_std * z`` (in float32), with the train targets' mean and standard
    deviation (from the head spec; 0 and 1, the identity, for heads saved before they existed). A fresh head
    (small weights, zero bias) so starts at the mean target instead of 0, and the regression task's loss, divided
    by ``target_std^2`` (:meth:`loss_kwargs`), is the squared error on the standardised scale: a scale that
    does not depend on the units of the targets when it is weighed against the other tasks' losses.
    """

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__(hidden_size, num_outputs, pooling, dropout, initializer_range)
        mean, std = float(target_mean), float(target_std)
        if not math.isfinite(mean):
            raise ConfigError(f"regression head: target_mean must be a finite number, got {target_mean!r}")
        if not (math.isfinite(std) and std > 0):
            raise ConfigError(f"regression head: target_std must be a finite number > 0, got {target_std!r}")
        # plain floats, not buffers: heads.safetensors keeps its layout, and a bf16 encoder does not round them
        self.target_mean, self.target_std = mean, std

    @classmethod
    def spec_kwargs(cls, spec: Any) -> dict[str, Any]:
        mean, std = getattr(spec, "target_mean", None), getattr(spec, "target_std", None)
        return {"target_mean": 0.0 if mean is None else mean, "target_std": 1.0 if std is None else std}

    def loss_kwargs(self) -> dict[str, Any]:
        return {"target_std": self.target_std}

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        z = super().forward(hidden, attention_mask, pooler_output)
        z = z.squeeze(-1) if z.shape[-1] == 1 else z
        if self.target_mean == 0.0 and self.target_std == 1.0:
            return z  # the identity: bit for bit what heads gave before standardisation
        return z.float() * self.target_std + self.target_mean

    def extra_repr(self) -> str:
        return f"target_mean={self.target_mean:g}, target_std={self.target_std:g}"


@HEADS.register("token_classification")
class TokenClassificationHead(Head):
    """dropout -> Linear on every position: logits [B, T, num_outputs]; pooling is ignored."""

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        return self.classifier(self.dropout(hidden))


@HEADS.register("multiple_choice")
class MultipleChoiceHead(ClassificationHead):
    """One score per (context, choice) sequence: pool -> dropout -> Linear(H, 1) on ``[B * K, T, H]``,
    reshaped to logits [B, K] (``num_outputs`` = K, the number of choices; consecutive rows are one example's
    choices, as ``mtfuse.tasks.features.collate`` lays them out)."""

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
    ) -> None:
        if num_outputs < 2:
            raise ConfigError(
                f"a multiple-choice head needs two or more choices, got num_outputs={num_outputs}"
            )
        super().__init__(hidden_size, 1, pooling, dropout, initializer_range)
        self.num_choices = num_outputs

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        scores = super().forward(hidden, attention_mask, pooler_output)  # [B * K, 1]
        if scores.shape[0] % self.num_choices:
            raise MtfuseError(
                f"multiple-choice head: {scores.shape[0]} sequences are not a whole number of examples of "
                f"{self.num_choices} choices"
            )
        return scores.reshape(-1, self.num_choices)

    def extra_repr(self) -> str:
        return f"num_choices={self.num_choices}"


@HEADS.register("seq2seq_decoder")
class Seq2SeqDecoderHead(nn.Module):
    """A Transformer decoder with cross-attention over the shared encoder's hidden states: logits
    ``[B, L, V]`` over the target vocabulary for the batch's ``decoder_input_ids`` (teacher forcing).

    The decoder is a Hugging Face ``BertLMHeadModel`` (``is_decoder``, ``add_cross_attention``) whose config
    the spec's ``decoder`` holds. :meth:`warm_start` copies the encoder's weights into it, so encoder and
    decoder start from the same checkpoint and only the cross-attention is new: the BERT2BERT warm start of
    Rothe, Narayan & Severyn 2020 ("Leveraging Pre-trained Checkpoints for Sequence Generation Tasks", TACL),
    what ``EncoderDecoderModel.from_encoder_decoder_pretrained`` does. ``num_outputs`` is the vocabulary size;
    pooling and dropout are unused (the decoder has its own dropout)."""

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
        from transformers import BertConfig, BertLMHeadModel

        if not decoder or not isinstance(decoder.get("config"), dict):
            raise ConfigError("a seq2seq_decoder head needs its decoder config (head spec field 'decoder')")
        arch = decoder.get("arch", "bert")
        if arch != "bert":
            raise ConfigError(f"seq2seq_decoder: unknown decoder arch '{arch}'; choose from [bert]")
        config = BertConfig.from_dict({**decoder["config"], "is_decoder": True, "add_cross_attention": True})
        if config.hidden_size != hidden_size or config.vocab_size != num_outputs:
            raise ConfigError(
                f"seq2seq_decoder: decoder config (hidden {config.hidden_size}, vocabulary {config.vocab_size}) "
                f"does not fit the encoder (hidden {hidden_size}) and num_outputs={num_outputs}"
            )
        self.decoder = BertLMHeadModel(config)
        self.tokens = {k: int(decoder[k]) for k in ("start_token_id", "eos_token_id", "pad_token_id")}
        self.label_smoothing = float(decoder.get("label_smoothing", 0.0))
        # The output layer is tied to the word embeddings: store each tensor once (safetensors refuses
        # tensors that share memory) and accept a state without the tied copies.
        self._register_state_dict_hook(_drop_tied)
        self.register_load_state_dict_post_hook(_tied_not_missing)

    #: tensors of the decoder that are the same tensors as others (tied): left out of saved state dicts
    TIED = ("decoder.cls.predictions.decoder.weight", "decoder.cls.predictions.decoder.bias")

    def tie_targets(self) -> list[Tensor]:
        """Tensors outside the head that its ``TIED`` tensors may be (none: the decoder ties within itself)."""
        return []

    @classmethod
    def spec_kwargs(cls, spec: Any) -> dict[str, Any]:
        return {"decoder": getattr(spec, "decoder", None)}

    def loss_kwargs(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}

    def warm_start(self, encoder: nn.Module) -> None:
        """Copy the encoder's embeddings and layers into the decoder (cross-attention and the LM head's
        transform stay freshly initialised; the output layer is tied to the word embeddings)."""
        state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
        result = self.decoder.bert.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ConfigError(
                f"seq2seq_decoder: cannot warm-start from this encoder ({type(encoder).__name__}): "
                f"unexpected tensor '{result.unexpected_keys[0]}'; the warm start needs a BERT-style encoder"
            )
        self.decoder.tie_weights()

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        pooler_output: Tensor | None,
        batch: Any = None,
    ) -> Tensor:
        if batch is None or "decoder_input_ids" not in batch:
            raise MtfuseError(
                "seq2seq_decoder: the batch has no decoder_input_ids (a generation task's batch)"
            )
        out = self.decoder(
            input_ids=batch["decoder_input_ids"],
            attention_mask=batch.get("decoder_attention_mask"),
            encoder_hidden_states=hidden,
            encoder_attention_mask=attention_mask,
            use_cache=False,
            return_dict=True,
        )
        return out.logits

    def seq2seq_view(self, encoder: nn.Module) -> Any:
        """A transformers ``EncoderDecoderModel`` over the shared encoder and this decoder (the same modules,
        nothing copied): what decoding calls ``generate`` on, and what ``save_pretrained`` writes in the form
        plain transformers loads."""
        from transformers import EncoderDecoderModel

        view = EncoderDecoderModel(encoder=encoder, decoder=self.decoder)
        view.config.decoder_start_token_id = self.tokens["start_token_id"]
        view.config.eos_token_id = self.tokens["eos_token_id"]
        view.config.pad_token_id = self.tokens["pad_token_id"]
        return view

    def generation_tokens(self) -> dict[str, Any]:
        """Decoding's special tokens, as ``transformers.GenerationConfig`` fields."""
        return {
            "decoder_start_token_id": self.tokens["start_token_id"],
            "eos_token_id": self.tokens["eos_token_id"],
            "pad_token_id": self.tokens["pad_token_id"],
        }

    def save_hf(self, encoder: nn.Module, directory: Any) -> None:
        """Write the task's model as plain transformers loads it: ``EncoderDecoderModel.from_pretrained``."""
        view = self.seq2seq_view(encoder)
        for key, value in self.generation_tokens().items():
            setattr(view.generation_config, key, value)
        view.save_pretrained(directory)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing:g}"


def _drop_tied(module: Any, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """A state-dict hook: leave out the head's ``TIED`` tensors while they are tied, i.e. share memory with
    another tensor of its state (a decoder's output layer and its word embeddings) or with one of its
    ``tie_targets()`` outside the head (an MLM decoder and the encoder's word embeddings)."""
    tied = module.TIED
    others = {v.data_ptr() for k, v in state.items() if k.startswith(prefix) and k[len(prefix) :] not in tied}
    others.update(t.data_ptr() for t in module.tie_targets())
    for name in tied:
        t = state.get(prefix + name)
        if t is not None and t.data_ptr() in others:  # still tied: the other tensor holds it
            del state[prefix + name]


def _tied_not_missing(module: Any, incompatible: Any) -> None:
    """A load post-hook: a state without the tied tensors (as :func:`_drop_tied` saves it) is complete."""
    for key in list(incompatible.missing_keys):
        if key.endswith(module.TIED):
            incompatible.missing_keys.remove(key)


@HEADS.register("intent_slots")
class IntentSlotsHead(ClassificationHead):
    """Joint intent + slots (``mtfuse.tasks.types.intent_slots``): pool -> dropout -> Linear(H, I) for the
    intent and dropout -> Linear(H, S) on every position for the slots, packed into one tensor [B, T, I + S]
    in the task's label order (the I ``intent:`` labels, then the S ``slot:`` labels). Position 0 (the leading
    special token, never a word) holds the intent logits, the other positions the slot logits; the other
    block, and the designated ``<unseen>`` classes, get a large negative logit, so each row's softmax is a
    distribution over its own block. One tensor keeps the loss, autocast, Fisher, ensembles and export as
    for a token head."""

    NEG = -1.0e4  # exp() of it is 0 in float32, and it fits float16 / bfloat16

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
        labels: list[str] | None = None,
    ) -> None:
        from mtfuse.tasks.types.intent_slots import INTENT, SLOT, UNSEEN_LABELS

        if not labels or len(labels) != num_outputs:
            raise ConfigError("an intent_slots head needs its label list (intent: labels, then slot: labels)")
        n_intents = sum(x.startswith(INTENT) for x in labels)
        if not labels[:n_intents] == [x for x in labels if x.startswith(INTENT)] or not all(
            x.startswith(SLOT) for x in labels[n_intents:]
        ):
            raise ConfigError(
                "an intent_slots head's labels must be the intent: labels, then the slot: labels"
            )
        if n_intents < 1 or n_intents == num_outputs:
            raise ConfigError("an intent_slots head needs at least one intent and one slot label")
        super().__init__(hidden_size, n_intents, pooling, dropout, initializer_range)
        self.slot_classifier = nn.Linear(hidden_size, num_outputs - n_intents)
        nn.init.normal_(self.slot_classifier.weight, mean=0.0, std=initializer_range)
        nn.init.zeros_(self.slot_classifier.bias)
        never = torch.tensor([self.NEG if x in UNSEEN_LABELS else 0.0 for x in labels])
        # not saved (persistent=False): heads.safetensors holds weights only; the labels rebuild the masks
        self.register_buffer("intent_mask", never[:n_intents].clone(), persistent=False)
        self.register_buffer("slot_mask", never[n_intents:].clone(), persistent=False)

    @classmethod
    def spec_kwargs(cls, spec: Any) -> dict[str, Any]:
        return {"labels": getattr(spec, "labels", None)}

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        intent = super().forward(hidden, attention_mask, pooler_output)  # [B, I]
        slots = self.slot_classifier(self.dropout(hidden))  # [B, T, S]
        intent = intent + self.intent_mask.to(intent.dtype)
        slots = slots + self.slot_mask.to(slots.dtype)
        b, t = hidden.shape[:2]
        n_i, n_s = intent.shape[-1], slots.shape[-1]
        first = torch.cat([intent[:, None], intent.new_full((b, 1, n_s), self.NEG)], dim=-1)
        rest = torch.cat([slots.new_full((b, t - 1, n_i), self.NEG), slots[:, 1:]], dim=-1)
        return torch.cat([first, rest.to(first.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"intents={self.classifier.out_features}, slots={self.slot_classifier.out_features}"


@HEADS.register("srl")
class SrlHead(Head):
    """Semantic roles for one marked predicate: each position's hidden state concatenated with the predicate's
    (the mean over the sub-words the batch's ``token_type_ids`` mark with 1), dropout, Linear(2H, K): logits
    [B, T, K]. Shi & Lin 2019, "Simple BERT Models for Relation Extraction and Semantic Role Labeling"
    (arXiv:1904.05255), concatenate the predicate's representation to every token's; their BiLSTM is left out.
    A row whose predicate was cut off by max_length gets a zero predicate vector."""

    takes_batch = True

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__(2 * hidden_size, num_outputs, pooling, dropout, initializer_range)

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        pooler_output: Tensor | None,
        batch: Any = None,
    ) -> Tensor:
        marks = batch.get("token_type_ids") if batch is not None else None
        if marks is None:
            raise MtfuseError(
                "the srl head needs the batch's token_type_ids (1 on the predicate's sub-words)"
            )
        m = (marks == 1).to(hidden.dtype).unsqueeze(-1)
        predicate = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # [B, H]
        both = torch.cat([hidden, predicate.unsqueeze(1).expand_as(hidden)], dim=-1)
        return self.classifier(self.dropout(both))


@HEADS.register("span_qa")
class SpanQAHead(Head):
    """Extractive QA: Linear(H, 2) on every position -> start and end logits [B, T, 2] (as
    ``BertForQuestionAnswering``, Devlin et al. 2019); pooling is ignored. Padding positions get a large
    negative logit, so that softmaxes over the window (loss, decoding, Fisher, entropy) leave them out."""

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
    ) -> None:
        if num_outputs != 2:
            raise ConfigError(f"a span QA head has two outputs (start, end), got num_outputs={num_outputs}")
        super().__init__(hidden_size, 2, pooling, dropout, initializer_range)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        logits = self.classifier(self.dropout(hidden)).float()
        if attention_mask is not None:
            logits = logits.masked_fill(attention_mask.unsqueeze(-1) == 0, -1e4)
        return logits


@HEADS.register("masked_lm")
class MaskedLMHead(nn.Module):
    """Masked language modelling (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers
    for Language Understanding"): ``BertLMPredictionHead``'s dense -> activation -> LayerNorm transform, then a
    decoder over the vocabulary whose weight is the encoder's input word embeddings (tied, as
    ``BertForMaskedLM`` ties them; :meth:`tie`), plus a bias per token. Logits [N, V] at the batch's
    ``mlm_mask`` positions (the masked ones; N over the whole batch, row by row), or [B, T, V] at every
    position when the batch has no mask (the ONNX export).

    :meth:`warm_start` loads the checkpoint's own MLM head when there is one: ``cls.predictions.*`` of a
    ``BertForMaskedLM`` checkpoint's safetensors, or ``lm_head.*`` of a RoBERTa / XLM-RoBERTa one (the same
    dense -> GELU -> LayerNorm -> tied decoder + bias); else the head starts fresh, initialised as BERT does.
    ``num_outputs`` is the vocabulary size; the spec's ``lm_head`` gives ``hidden_act`` and
    ``layer_norm_eps`` (the encoder's); pooling and dropout are unused (BERT's MLM head has no dropout)."""

    takes_batch = True
    #: the decoder weight is the encoder's word embeddings once tied: stored once, with the encoder
    TIED = ("decoder.weight",)
    #: this head's tensors that a checkpoint's own MLM head holds
    CHECKPOINT_KEYS = (
        "transform.dense.weight",
        "transform.dense.bias",
        "transform.LayerNorm.weight",
        "transform.LayerNorm.bias",
        "bias",
    )
    #: checkpoint MLM heads: (prefix, this head's name -> the checkpoint's name after the prefix)
    CHECKPOINT_HEADS = (
        ("cls.predictions.", {k: k for k in CHECKPOINT_KEYS}),  # BertForMaskedLM, BertForPreTraining
        (  # RobertaForMaskedLM, XLMRobertaForMaskedLM (xlm-roberta-base, roberta-base on the hub)
            "lm_head.",
            {
                "transform.dense.weight": "dense.weight",
                "transform.dense.bias": "dense.bias",
                "transform.LayerNorm.weight": "layer_norm.weight",
                "transform.LayerNorm.bias": "layer_norm.bias",
                "bias": "bias",
            },
        ),
    )

    def __init__(
        self,
        hidden_size: int,
        num_outputs: int,
        pooling: str,
        dropout: float,
        initializer_range: float = 0.02,
        lm_head: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        spec = lm_head or {}
        act = str(spec.get("hidden_act", "gelu"))
        if act not in ACT2FN:
            raise ConfigError(f"masked_lm head: unknown activation '{act}' (lm_head.hidden_act)")
        self.hidden_act = act
        self.transform = nn.Sequential()
        self.transform.add_module("dense", nn.Linear(hidden_size, hidden_size))
        self.transform.add_module("act", ACT2FN[act])
        self.transform.add_module(
            "LayerNorm", nn.LayerNorm(hidden_size, eps=float(spec.get("layer_norm_eps", 1e-12)))
        )
        self.decoder = nn.Linear(hidden_size, num_outputs, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_outputs))
        for linear in (self.transform.dense, self.decoder):  # BertPreTrainedModel._init_weights
            nn.init.normal_(linear.weight, mean=0.0, std=initializer_range)
        nn.init.zeros_(self.transform.dense.bias)
        self._embeddings: list[nn.Module] = []  # the encoder's input embeddings once tied (not a submodule)
        self._register_state_dict_hook(_drop_tied)
        self.register_load_state_dict_post_hook(_tied_not_missing)

    @classmethod
    def spec_kwargs(cls, spec: Any) -> dict[str, Any]:
        return {"lm_head": getattr(spec, "lm_head", None)}

    def loss_kwargs(self) -> dict[str, Any]:
        return {}

    def tie(self, encoder: nn.Module) -> None:
        """Make the decoder weight the encoder's input word embeddings (the same tensor, not a copy): called
        whenever the model is built or loaded, so saved heads never hold it."""
        emb = encoder.get_input_embeddings()
        if tuple(emb.weight.shape) != tuple(self.decoder.weight.shape):
            raise ConfigError(
                f"masked_lm head: the encoder's word embeddings are {list(emb.weight.shape)}, the decoder "
                f"needs {list(self.decoder.weight.shape)} (num_outputs = the vocabulary size)"
            )
        self.decoder.weight = emb.weight
        self._embeddings = [emb]

    def tie_targets(self) -> list[Tensor]:
        return [e.weight for e in self._embeddings]

    def warm_start(self, encoder: nn.Module) -> None:
        """Load the checkpoint's own MLM head (BERT's ``cls.predictions.transform.*`` and
        ``cls.predictions.bias``, or RoBERTa's ``lm_head.dense.*``, ``lm_head.layer_norm.*`` and
        ``lm_head.bias``) from the safetensors files the encoder was loaded from, when it has them; keep the
        fresh head when it has none (a plain ``BertModel`` or sentence-transformers checkpoint, such as the
        packaged MiniLM)."""
        from mtfuse.model.encoder import checkpoint_tensors

        source = str(getattr(encoder, "name_or_path", "") or "")
        for prefix, names in self.CHECKPOINT_HEADS:
            found = checkpoint_tensors(source, prefix)
            if "bias" not in found and "decoder.bias" in found:  # stored under the tied decoder bias
                found["bias"] = found["decoder.bias"]
            state = {k: found[theirs] for k, theirs in names.items() if theirs in found}
            if state:
                break
        else:
            return
        mine = self.state_dict()
        for key in self.CHECKPOINT_KEYS:
            if key not in state or tuple(state[key].shape) != tuple(mine[key].shape):
                what = "missing" if key not in state else f"of shape {list(state[key].shape)}"
                raise ConfigError(
                    f"masked_lm head: the checkpoint's MLM head does not fit: '{prefix}{names[key]}' "
                    f"is {what}, the head needs {list(mine[key].shape)}"
                )
        self.load_state_dict(state, strict=False)  # copies into the head's dtype; the decoder stays tied

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        pooler_output: Tensor | None,
        batch: Any = None,
    ) -> Tensor:
        where = batch.get("mlm_mask") if batch is not None else None
        h = hidden[where] if where is not None else hidden  # only the positions scored: [N, H]
        return self.decoder(self.transform(h)) + self.bias

    def extra_repr(self) -> str:
        return f"tied={bool(self._embeddings)}"
