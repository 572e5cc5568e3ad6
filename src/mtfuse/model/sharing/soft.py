"""Soft parameter sharing: each task has its own copy of chosen encoder layers, pulled towards the shared one.

Duong et al., "Low Resource Dependency Parsing: Cross-lingual Parameter Sharing in a Neural Network Parser",
ACL 2015 (the l2 pull between task parameters); here towards a central copy, as in Ruder's MTL overview
(arXiv:1706.05098, section 3.2):

    L = sum_t w_t L_t + penalty * sum_t sum_{l in layers} ||theta_t,l - theta_s,l||^2

``theta_s,l`` is encoder layer ``l`` itself (what ``model.safetensors`` holds, so the saved encoder is the
"consensus" model); ``theta_t,l`` are the per-task copies, created equal to it (the penalty starts at 0).
During task ``t``'s encoder pass the copies replace the shared layers; no task loss reaches ``theta_s``: only
the penalty moves it (to the mean of the copies). ``forward_all`` runs the encoder once per task.

Parameters (``model.sharing``): ``layers`` (indices into the encoder's transformer layers, 0-based, negative
from the top; default ``[-1]``, the last) and ``penalty`` (lambda, default 1e-3). Memory: one extra copy of
each chosen layer per task. For a cheaper variant with per-task low-rank deltas, use ``method: adapters`` with
``delta_penalty`` and ``train_base: true``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from pydantic import Field, field_validator
from torch import Tensor, nn
from transformers import PreTrainedModel

from mtfuse.model.sharing.base import SHARING, Sharing, encoder_layers, normalize_layer
from mtfuse.params import Strict


@SHARING.register("soft")
class SoftSharing(Sharing):
    """Per-task copies of ``layers`` (``copies[task][str(layer)]``), l2-pulled towards the shared layer."""

    class Params(Strict):
        layers: list[int] = Field(default_factory=lambda: [-1])  # encoder layers copied per task
        penalty: float = Field(1e-3, ge=0.0)  # lambda in front of sum_t ||theta_t - theta_s||^2

        @field_validator("layers")
        @classmethod
        def _some(cls, v: list[int]) -> list[int]:
            if not v:
                raise ValueError("name at least one encoder layer")
            return v

    per_task_encoder = True
    params: Params

    def __init__(self, encoder: PreTrainedModel, tasks: list[str], params: Params) -> None:  # type: ignore[override]
        super().__init__(encoder, tasks, params)
        layers = encoder_layers(encoder)
        self.layer_ids = sorted(
            {normalize_layer(i, len(layers), "model.sharing.layers") for i in params.layers}
        )
        self._layers: list[nn.ModuleList] = [layers]  # not registered: it belongs to the encoder
        self.copies = nn.ModuleDict(
            {t: nn.ModuleDict({str(i): copy.deepcopy(layers[i]) for i in self.layer_ids}) for t in tasks}
        )

    def activate(self, task: str | None) -> AbstractContextManager[None]:
        return nullcontext() if task is None else self._swap(task)

    @contextmanager
    def _swap(self, task: str) -> Iterator[None]:
        layers = self._layers[0]
        shared = {i: layers[i] for i in self.layer_ids}
        try:
            for i in self.layer_ids:
                layers[i] = self.copies[task][str(i)]
            yield
        finally:
            for i, module in shared.items():
                layers[i] = module

    def extra_loss(self) -> Tensor:
        """``penalty * sum_t sum_l ||theta_t,l - theta_s,l||^2`` over every parameter of the copied layers."""
        layers = self._layers[0]
        total: Tensor | None = None
        for task in self.tasks:
            for i in self.layer_ids:
                shared = dict(layers[i].named_parameters())
                for name, p in self.copies[task][str(i)].named_parameters():
                    d = (p - shared[name]).pow(2).sum()
                    total = d if total is None else total + d
        assert total is not None  # at least one task and one layer
        return self.params.penalty * total

    def shared_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The encoder without the copied layers' centres (no task loss reaches them; only the penalty)."""
        layers = self._layers[0]
        centre = {id(p) for i in self.layer_ids for p in layers[i].parameters()}
        for name, p in self.encoder.named_parameters():
            if id(p) not in centre:
                yield f"encoder.{name}", p

    def task_named_parameters(self, task: str) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.copies[task].named_parameters():
            yield f"sharing.copies.{task}.{name}", p
