"""Data-dependent merge methods: pure functions over the tensors of one parameter PLUS per-model statistics.

Fisher merging, RegMean, AdaMerging and greedy soups need something computed from data before any tensor is
merged: a diagonal Fisher per parameter, a Gram matrix per Linear layer, learned coefficients, or the set of
ingredients a greedy soup kept. The statistics are computed by the merge driver
(``mtfuse.fusion.merge_data``: one input model in memory at a time, cached as safetensors in a temporary
folder) and handed to the method one tensor name at a time::

    method = DATA_MERGE_METHODS.get("fisher")
    merged = method.merge(tensors, base, params, weights, stats=[fisher_0, fisher_1])

``stats`` holds one tensor per model (same order as ``tensors``) or is None where the statistics do not cover
this parameter (e.g. RegMean's biases and LayerNorms: not inputs of a Linear layer); each method says what it
does then. The tensor-level contract is the one of :class:`~mtfuse.fusion.merge.base.MergeMethod` (checks,
float32 work dtype, result in the dtype of ``tensors[0]``), plus:

- ``needs_stats``: the kind of statistics (a name in ``mtfuse.fusion.merge_data.STATS``);
- ``stats_params``: the ``Params`` fields the statistics depend on (a hyperparameter search recomputes them
  only when one of these changes);
- ``repeated_tasks``: the inputs may share tasks (soups of runs of the same task); the driver then keeps one
  head per task, the one the statistics name.

These methods have their own registry so that ``MERGE_METHODS`` keeps meaning "needs nothing but tensors";
``mtfuse merge --method`` accepts the names of both (``mtfuse.fusion.merging.get_method``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel
from torch import Tensor

from mtfuse.errors import ConfigError, DataError
from mtfuse.fusion.merge.base import MergeMethod, _check_tensors
from mtfuse.registry import Registry


class StatsMergeFn(Protocol):
    def __call__(
        self,
        tensors: list[Tensor],
        base: Tensor | None,
        params: Any,
        weights: list[float],
        *,
        stats: list[Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@dataclass(frozen=True)
class StatsMergeMethod(MergeMethod):
    """A merge method whose pure function also receives per-model statistics (see the module docstring)."""

    needs_stats: str = ""
    stats_params: tuple[str, ...] = ()
    repeated_tasks: bool = False

    def merge(  # type: ignore[override]
        self,
        tensors: list[Tensor],
        base: Tensor | None,
        params: BaseModel | Mapping[str, Any] | None,
        weights: list[float] | None,
        *,
        stats: list[Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        p = self.params(params)
        tensors = list(tensors)
        self._check_count(len(tensors))
        if not self.needs_base:
            base = None
        elif base is None:
            raise ConfigError(f"merge method '{self.name}' needs the base (pretrained) model's tensor")
        w = self._check_weights(weights, len(tensors))
        named = [(f"model {i}", t) for i, t in enumerate(tensors)]
        if base is not None:
            named.append(("the base model", base))
        _check_tensors(named)
        work = torch.float64 if any(t.dtype == torch.float64 for _, t in named) else torch.float32
        if stats is not None:
            stats = list(stats)
            if len(stats) != len(tensors):
                raise DataError(f"got statistics for {len(stats)} models, tensors of {len(tensors)}")
            _check_stats(stats)
            stats = [s.to(work) for s in stats]
        out = self.fn(  # type: ignore[call-arg]
            [t.to(work) for t in tensors],
            None if base is None else base.to(work),
            p,
            w,
            stats=stats,
            generator=generator,
        )
        return out.to(tensors[0].dtype)

    __call__ = merge


def _check_stats(stats: list[Tensor]) -> None:
    for i, s in enumerate(stats):
        if not isinstance(s, Tensor) or not s.is_floating_point():
            raise DataError(f"statistics of model {i}: expected a floating-point tensor")
        if not bool(torch.isfinite(s).all()):
            raise DataError(f"statistics of model {i} have non-finite values")


def stats_merge_method(
    name: str,
    *,
    Params: type[BaseModel],  # noqa: N803  (the interface's attribute name)
    needs_base: bool,
    needs_stats: str,
    stats_params: tuple[str, ...] = (),
    num_models: tuple[int, int | None] = (1, None),
    takes_weights: bool = True,
    repeated_tasks: bool = False,
) -> Callable[[StatsMergeFn], StatsMergeMethod]:
    """Wrap a pure function over (tensors, statistics) into a :class:`StatsMergeMethod` and register it."""

    def deco(fn: StatsMergeFn) -> StatsMergeMethod:
        method = StatsMergeMethod(
            name=name,
            Params=Params,
            needs_base=needs_base,
            num_models=num_models,
            fn=fn,  # type: ignore[arg-type]
            takes_weights=takes_weights,
            needs_stats=needs_stats,
            stats_params=stats_params,
            repeated_tasks=repeated_tasks,
        )
        return DATA_MERGE_METHODS.register(name)(method)

    return deco


def weighted_mean(tensors: list[Tensor], weights: list[float], method: str) -> Tensor:
    """sum_i w_i t_i / sum_i w_i: the fallback of the statistics-weighted methods."""
    total = sum(weights)
    if total <= 0:
        raise ConfigError(f"merge method '{method}': the weights {weights} sum to 0; cannot average")
    out = torch.zeros_like(tensors[0])
    for w, t in zip(weights, tensors, strict=True):
        out.add_(t, alpha=w)
    return out / total


DATA_MERGE_METHODS: Registry[StatsMergeMethod] = Registry("merge method")
