"""Mixture of experts over the encoder output with one softmax gate per task (MMoE), optionally with per-task
experts (CGC).

MMoE: Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
KDD 2018. CGC: Tang et al., "Progressive Layered Extraction (PLE)", RecSys 2020 (its single-level
"customized gate control": shared experts plus experts owned by one task).

For every token vector ``x`` [H] of the hidden states a head reads (the last layer, or the task's ``layer``):

    g_t(x) = softmax(W_t x + b_t)                         one gate per task over its E + E_t experts
    y_t(x) = sum_e g_t(x)_e * f_e(x)                      f_e: Linear(H, d) -> GELU -> dropout -> Linear(d, H)
    out_t  = x + y_t(x)  (residual: true, the default)    or y_t(x) (residual: false)

The head then pools ``out_t`` as usual (``pooler`` pooling re-applies the encoder's pooler to it). Expert and
gate weights start as the heads do (normal(0, initializer_range), zero bias), so with the residual the experts
start as a small perturbation of the pretrained features. One encoder pass serves all tasks; the shared
experts run once per pass and hidden-state tensor.

Parameters (``model.sharing``): ``experts`` (shared, default 4), ``task_experts`` (per task, default 0 = MMoE;
> 0 = CGC), ``expert_size`` (d, default the encoder's hidden size), ``dropout`` (default 0.1), ``residual``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from transformers import PreTrainedModel

from mtfuse.model.sharing.base import SHARING, Sharing
from mtfuse.params import Strict


class Expert(nn.Module):
    """A position-wise two-layer MLP, [.., H] -> [.., H]."""

    def __init__(self, hidden_size: int, size: int, dropout: float, initializer_range: float) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, size)
        self.down = nn.Linear(size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        for lin in (self.up, self.down):
            nn.init.normal_(lin.weight, mean=0.0, std=initializer_range)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(nn.functional.gelu(self.up(x))))


@SHARING.register("mmoe")
class MixtureOfExperts(Sharing):
    """``experts`` (shared), ``task_experts[task]`` (CGC) and ``gates[task]``."""

    class Params(Strict):
        experts: int = Field(4, ge=0)  # shared experts
        task_experts: int = Field(0, ge=0)  # experts per task: 0 = MMoE, > 0 = CGC
        expert_size: int | None = Field(None, ge=1)  # default: the encoder's hidden size
        dropout: float = Field(0.1, ge=0.0, lt=1.0)
        residual: bool = True  # out = x + mixture (else the mixture alone)

        @model_validator(mode="after")
        def _some_expert(self) -> MixtureOfExperts.Params:
            if self.experts + self.task_experts < 1:
                raise ValueError("experts + task_experts must be at least 1")
            return self

    transforms_hidden = True
    params: Params

    def __init__(self, encoder: PreTrainedModel, tasks: list[str], params: Params) -> None:  # type: ignore[override]
        super().__init__(encoder, tasks, params)
        config = encoder.config
        hidden = int(config.hidden_size)
        size = params.expert_size or hidden
        init = float(getattr(config, "initializer_range", 0.02))

        def experts(n: int) -> nn.ModuleList:
            return nn.ModuleList(Expert(hidden, size, params.dropout, init) for _ in range(n))

        self.experts = experts(params.experts)
        self.task_experts = nn.ModuleDict({t: experts(params.task_experts) for t in tasks})
        self.gates = nn.ModuleDict(
            {t: nn.Linear(hidden, params.experts + params.task_experts) for t in tasks}
        )
        for gate in self.gates.values():
            nn.init.normal_(gate.weight, mean=0.0, std=init)
            nn.init.zeros_(gate.bias)

    def transform(
        self, task: str, hidden: Tensor, attention_mask: Tensor | None, cache: dict[str, Any]
    ) -> Tensor:
        outs = []
        if len(self.experts):
            if "shared" not in cache:  # every task reading this tensor in this pass reuses the shared experts
                cache["shared"] = torch.stack([e(hidden) for e in self.experts], dim=-2)  # [B,T,E,H]
            outs.append(cache["shared"])
        if len(self.task_experts[task]):
            outs.append(torch.stack([e(hidden) for e in self.task_experts[task]], dim=-2))
        stacked = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-2)
        gate = self.gate_weights(task, hidden)  # [B,T,E+E_t]
        mixed = (gate.unsqueeze(-1) * stacked).sum(dim=-2)
        return hidden + mixed if self.params.residual else mixed

    def gate_weights(self, task: str, hidden: Tensor) -> Tensor:
        """``task``'s gate probabilities [.., E + E_t] for hidden states (shared experts first)."""
        return torch.softmax(self.gates[task](hidden), dim=-1)

    def shared_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield from super().shared_named_parameters()
        for name, p in self.experts.named_parameters():
            yield f"sharing.experts.{name}", p

    def task_named_parameters(self, task: str) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.gates[task].named_parameters():
            yield f"sharing.gates.{task}.{name}", p
        for name, p in self.task_experts[task].named_parameters():
            yield f"sharing.task_experts.{task}.{name}", p
