"""An embedding + (Bi)LSTM encoder trained from scratch: the no-pretraining baseline (``model.name_or_path: lstm``).

What it measures: the same heads, sharing, sampling and weighting on an encoder that starts from random weights,
so that a run shows what pretraining buys (the Keras embedding + LSTM baseline of seed document 001, in PyTorch).

It is a Hugging Face model (``PreTrainedModel`` + ``PretrainedConfig``, ``model_type`` ``"mtfuse_lstm"``),
registered with ``AutoConfig`` / ``AutoModel`` when this module is imported (``import mtfuse`` does), so a run
directory's ``model/`` loads with plain ``AutoModel.from_pretrained`` and ``save_pretrained`` writes safetensors.

Architecture, per sequence of word pieces (the tokenizer of ``model.lstm.tokenizer``, by default the packaged
MiniLM's):

    x_t   = E[input_ids_t] + S[token_type_ids_t]               word + segment embeddings (embedding_dim)
    h^0   = dropout(x)                                         hidden_states[0]
    h^l   = [LSTM_fwd^l(h^(l-1)) ; LSTM_bwd^l(h^(l-1))]         hidden_states[l], l = 1..num_layers
            (dropout between layers, as ``nn.LSTM(dropout=...)``)
    pooler_output = the mean of h^L over the real tokens (attention_mask = 1)

``config.hidden_size`` is what a head reads: ``lstm_hidden_size`` (one direction), twice that when
bidirectional. The pooler output is the masked mean rather than the last state or a max: it is what the
``mean`` pooling of the heads computes (mean pooling is this encoder's default, so ``pooling: pooler`` and
``pooling: mean`` agree), and it uses both directions' states at every position. There is no pooler module
to re-apply to other states, so a head that reads another ``layer``, or sharing ``mmoe``, needs pooling
``mean`` or ``cls`` (``pooler`` is refused there with an error that says so).

Padding never changes a real token's output: each row's real tokens are moved to the front (in order), the
forward LSTM reads them first, the backward LSTM reads them reversed within the row's own length, and the
outputs are put back in place; padded positions come out as zeros. This is plain gathers around unpacked
``nn.LSTM`` calls, so it also exports to ONNX (``pack_padded_sequence`` does not). Any attention_mask works,
right- or left-padded.

Initialisation (seeded: :func:`build_lstm_encoder` takes the seed): embeddings uniform(-0.05, 0.05) with a zero
padding row (Keras' default), input weights Glorot-uniform, recurrent weights orthogonal per gate, biases zero
but the forget gate's 1 (Jozefowicz, Zaremba & Sutskever 2015, "An Empirical Exploration of Recurrent Network
Architectures").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

LSTM_MODEL_TYPE = "mtfuse_lstm"
EMBEDDING_INIT = 0.05  # embeddings ~ uniform(-0.05, 0.05), Keras' Embedding default
NO_ADAPTERS = (
    "model.sharing.method: adapters (peft LoRA / IA3) adapt the attention projections of a pretrained "
    "transformer; the from-scratch lstm encoder (model.name_or_path: lstm) has none and trains all its "
    "weights anyway: use hard, soft or mmoe sharing"
)


class LstmEncoderConfig(PretrainedConfig):
    """The LSTM encoder's architecture. ``hidden_size`` (what heads read) is derived, not set."""

    model_type = LSTM_MODEL_TYPE
    # the names the rest of mtfuse (and transformers) reads: hierarchical layers, the heads' default dropout
    attribute_map = {"num_hidden_layers": "num_layers", "hidden_dropout_prob": "dropout"}

    def __init__(
        self,
        vocab_size: int = 30522,
        embedding_dim: int = 128,
        lstm_hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
        type_vocab_size: int = 2,
        pad_token_id: int = 0,
        initializer_range: float = 0.02,
        init_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        given = kwargs.pop("hidden_size", None)  # written by to_dict; always derived
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.lstm_hidden_size = lstm_hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range  # the heads' initialisation (mtfuse reads it)
        self.init_seed = init_seed  # recorded: which seed drew the initial weights
        self.hidden_size = lstm_hidden_size * (2 if bidirectional else 1)
        if given is not None and int(given) != self.hidden_size:
            raise ValueError(
                f"hidden_size {given} does not match lstm_hidden_size {lstm_hidden_size} "
                f"x {'2 (bidirectional)' if bidirectional else '1'}"
            )
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class LstmLayer(nn.Module):
    """One layer: a forward LSTM and (bidirectional) a backward one, each over the real tokens only."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool) -> None:
        super().__init__()
        self.fwd = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.bwd = nn.LSTM(input_size, hidden_size, batch_first=True) if bidirectional else None

    def forward(self, x: Tensor, reverse: Tensor) -> Tensor:
        """``x`` [B,T,D] with each row's real tokens first; ``reverse`` [B,T] reverses each row's real part."""
        out, _ = self.fwd(x)
        if self.bwd is None:
            return out
        back, _ = self.bwd(_gather(x, reverse))
        return torch.cat([out, _gather(back, reverse)], dim=-1)  # reversing twice puts them back


class LstmEncoder(PreTrainedModel):
    """Embedding + (Bi)LSTM; returns ``last_hidden_state``, ``pooler_output`` (masked mean), ``hidden_states``."""

    config_class = LstmEncoderConfig
    base_model_prefix = "lstm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False

    def __init__(self, config: LstmEncoderConfig) -> None:
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(max(1, config.type_vocab_size), config.embedding_dim)
        self.dropout = nn.Dropout(config.dropout)
        sizes = [config.embedding_dim] + [config.hidden_size] * (config.num_layers - 1)
        self.layers = nn.ModuleList(
            LstmLayer(d, config.lstm_hidden_size, config.bidirectional) for d in sizes
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    def _init_weights(self, module: nn.Module) -> None:
        try:  # transformers 5: init functions that skip tensors loaded from a checkpoint
            from transformers import initialization as init
        except ImportError:  # transformers 4: from_pretrained initialises before it loads
            init = nn.init

        if isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -EMBEDDING_INIT, EMBEDDING_INIT)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LSTM):
            h = module.hidden_size
            for name, p in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(p)
                elif name.startswith("weight_hh"):
                    for g in range(4):  # input, forget, cell, output gates: one orthogonal block each
                        init.orthogonal_(p[g * h : (g + 1) * h])
                elif name.startswith("bias"):
                    init.zeros_(p)
                    if name.startswith("bias_ih"):  # one of the two biases carries the forget gate's 1
                        init.ones_(p[h : 2 * h])

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,  # accepted for the HF call convention; an LSTM has none
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple[Tensor, ...]:
        if output_hidden_states is None:
            output_hidden_states = bool(self.config.output_hidden_states)
        if return_dict is None:
            return_dict = bool(self.config.return_dict)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.to(torch.long)
        # real tokens first, in order (keys are unique: a stable order without a stable sort)
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device).unsqueeze(0)
        order = torch.argsort((1 - mask) * t + pos, dim=1)
        restore = torch.argsort(order, dim=1)
        lengths = mask.sum(dim=1, keepdim=True)
        reverse = torch.where(pos < lengths, lengths - 1 - pos, pos)  # within each row's real tokens

        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = self.dropout(x)
        keep = mask.unsqueeze(-1).to(x.dtype)
        states = [x * keep]
        h = _gather(x, order)
        for i, layer in enumerate(self.layers):
            if i:
                h = self.dropout(h)
            h = layer(h, reverse)
            states.append(_gather(h, restore) * keep)
        last = states[-1]
        pooled = (last * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        hidden_states = tuple(states) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (last, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=pooled, hidden_states=hidden_states
        )


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, t]]`` for [B,T,D] ``x`` and [B,T] ``index``."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def is_lstm_config(config: Any) -> bool:
    """True for the config of this encoder (an object or a config.json dict)."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type == LSTM_MODEL_TYPE


def build_lstm_encoder(config: LstmEncoderConfig, seed: int) -> LstmEncoder:
    """A freshly initialised encoder; the same config and seed give the same weights, and the global random
    state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LstmEncoder(config)


# exist_ok: importing this module twice (a reload) registers the same classes again
AutoConfig.register(LSTM_MODEL_TYPE, LstmEncoderConfig, exist_ok=True)
AutoModel.register(LstmEncoderConfig, LstmEncoder, exist_ok=True)
