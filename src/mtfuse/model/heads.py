"""Task heads: small modules on top of the shared encoder, one per task, chosen by name from ``HEADS``.

Every head is built as ``cls(hidden_size, num_outputs, pooling, dropout, initializer_range=0.02)`` and called
as ``head(hidden [B,T,H], attention_mask [B,T], pooler_output [B,H] | None)``:

- ``classification``: pool -> dropout -> Linear(H, K): logits [B, K] (as ``BertForSequenceClassification``)
- ``regression``: the same with K = 1, squeezed: [B]
- ``multilabel``: the same as classification: one logit per label [B, K], for a sigmoid/BCE loss
- ``token_classification``: dropout -> Linear(H, K) on every position: [B, T, K]
  (as ``BertForTokenClassification``)

Pooling (:func:`pool`): ``pooler`` = the encoder's own pooler output (dense + tanh on [CLS], what Hugging
Face feeds its sequence classifier), ``cls`` = the hidden state at position 0, ``mean`` = the mean over real
tokens.
"""

from __future__ import annotations

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
    """One score per sequence: [B] (with num_outputs > 1, one score per target: [B, num_outputs])."""

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        out = super().forward(hidden, attention_mask, pooler_output)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


@HEADS.register("token_classification")
class TokenClassificationHead(Head):
    """dropout -> Linear on every position: logits [B, T, num_outputs]; pooling is ignored."""

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, pooler_output: Tensor | None) -> Tensor:
        return self.classifier(self.dropout(hidden))
