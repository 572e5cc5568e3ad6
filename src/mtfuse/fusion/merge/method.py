"""The merge-method interface, its one registry and the input checks every method shares.

A merge method combines ONE tensor (one parameter name) of several fine-tuned models, plus the matching tensor
of the base (pretrained) model for task-vector methods, into one tensor::

    method = MERGE_METHODS.get("ties")
    merged = method.merge(tensors, base, method.Params(density=0.2), weights=None, generator=g)

Data-dependent methods (Fisher merging, RegMean, AdaMerging, greedy soups) need something computed from data
before any tensor is merged: a diagonal Fisher per parameter, a Gram matrix per Linear layer, learned
coefficients, or the set of ingredients a greedy soup kept. Such a method declares it:

- ``needs_stats``: the kind of statistics (a name in ``mtfuse.fusion.merge.statistics.STATS``), which the
  driver computes (one input model in memory at a time) and hands to the method one tensor name at a time::

      method = MERGE_METHODS.get("fisher")
      merged = method.merge(tensors, base, params, weights, stats=[fisher_0, fisher_1])

  ``stats`` holds one tensor per model (same order as ``tensors``) or is None where the statistics do not
  cover this parameter (e.g. RegMean's biases and LayerNorms: not inputs of a Linear layer); each method
  says what it does then;
- ``stats_params``: the ``Params`` fields the statistics depend on (a hyperparameter search recomputes them
  only when one of these changes);
- ``repeated_tasks``: the inputs may share tasks (soups of runs of the same task); the driver then keeps one
  head per task, the one the statistics name.

Methods whose maths is entry by entry (``elementwise``: task arithmetic, TIES, Breadcrumbs) are fed by the driver in
row blocks, so a merge's memory stays flat in the number of inputs. Such a method may need one quantity per
input computed over the whole tensor first (TIES: each task vector's trim threshold): it declares
``prepare(chunks, numel, params)``, which the driver calls once per input with that input's task vector
tau_i = theta_i - theta_base as an iterable of chunks (called again for another pass), and the method's
function then receives the results as ``prepared`` (one per input); called without them, on whole tensors, the
function computes them itself.

Iterating state dicts, streaming from safetensors, skipping non-float buffers and handling heads live outside
the methods (the caller also adds the tensor name to error messages). ``merge`` checks its inputs, computes in
float32 (float64 when an input is float64) and casts the result back to the dtype of ``tensors[0]``.

``weights`` are per-model weights, default 1.0 each. They must be finite, one per model, and >= 0 unless the
method sets ``negative_weights`` (only ``task_arithmetic``: a negative weight is task negation). Methods with
``takes_weights = False`` (``slerp``, ``model_stock``) refuse weights. Methods with ``stochastic = True``
(``dare_linear``, ``dare_ties``, ``della``) draw their masks from ``generator``; pass one seeded per tensor
(see :func:`tensor_generator`) so a merge is reproducible; ``None`` draws from torch's global RNG.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor

from mtfuse.errors import ConfigError, DataError
from mtfuse.registry import Registry


class MergeFn(Protocol):
    """``fn(tensors, base, params, weights, *, generator)``; a data-dependent method's also takes ``stats``."""

    def __call__(
        self,
        tensors: list[Tensor],
        base: Tensor | None,
        params: Any,
        weights: list[float],
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


class PrepareFn(Protocol):
    """``prepare(chunks, numel, params)``: one input's whole-tensor quantity, from its task vector's chunks."""

    def __call__(self, chunks: Callable[[], Iterable[Tensor]], numel: int, params: Any) -> Any: ...


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method: a pure function plus what it declares about its inputs.

    ``fn`` receives checked inputs: tensors (and base, when ``needs_base``) already in the work dtype,
    a ``Params`` instance and a list of one float weight per model.
    """

    name: str
    Params: type[BaseModel]
    needs_base: bool  # task-vector methods need the base (pretrained) tensor
    num_models: tuple[int, int | None]  # allowed number of fine-tuned inputs (min, max or None)
    fn: MergeFn
    negative_weights: bool = False  # may a per-model weight be < 0?
    takes_weights: bool = True  # False: the method has no per-model weights (slerp uses t)
    stochastic: bool = False  # draws random masks from ``generator``
    needs_stats: str | None = None  # data-dependent: the statistics it needs (a name in statistics.STATS)
    stats_params: tuple[str, ...] = ()  # the Params fields those statistics depend on
    repeated_tasks: bool = False  # inputs may share tasks (one head per task is kept)
    elementwise: bool = False  # entry by entry (given ``prepared``): the driver may merge row blocks
    prepare: PrepareFn | None = None  # one value per input over its whole task vector (elementwise methods)

    @property
    def description(self) -> str:
        """The first line of the method's docstring (for ``--help`` listings)."""
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""

    def params(self, raw: BaseModel | Mapping[str, Any] | None = None) -> BaseModel:
        """``raw`` as this method's ``Params`` (None -> defaults); invalid values -> ConfigError."""
        if isinstance(raw, self.Params):
            return raw
        if isinstance(raw, BaseModel):
            raise ConfigError(
                f"merge method '{self.name}' expects {self.Params.__name__}, got {type(raw).__name__}"
            )
        try:
            return self.Params.model_validate(dict(raw or {}))
        except ValidationError as err:
            msgs = []
            for e in err.errors():
                key = ".".join(str(p) for p in e["loc"])
                if e["type"] == "extra_forbidden":
                    valid = ", ".join(sorted(self.Params.model_fields))
                    msgs.append(f"unknown parameter '{key}'; choose from [{valid}]")
                else:
                    msgs.append(f"parameter '{key}': {e['msg']}" if key else e["msg"])
            raise ConfigError(f"merge method '{self.name}': " + "; ".join(msgs)) from None

    def merge(
        self,
        tensors: list[Tensor],
        base: Tensor | None,
        params: BaseModel | Mapping[str, Any] | None,
        weights: list[float] | None,
        *,
        stats: list[Tensor] | None = None,
        generator: torch.Generator | None = None,
        prepared: list[Any] | None = None,
        finite: bool = False,
    ) -> Tensor:
        """``finite``: the caller has proven every tensor finite (the driver's distance check: a finite
        ||theta_i - theta_base||^2 and ||theta_base||^2), so the NaN / inf check, one more read of every input,
        is skipped."""
        p = self.params(params)
        tensors = list(tensors)
        self._check_count(len(tensors))
        if not self.needs_base:
            base = None  # ignored: linear, slerp
        elif base is None:
            raise ConfigError(f"merge method '{self.name}' needs the base (pretrained) model's tensor")
        w = self._check_weights(weights, len(tensors))
        named = [(f"model {i}", t) for i, t in enumerate(tensors)]
        if base is not None:
            named.append(("the base model", base))
        _check_tensors(named, finite)
        work = torch.float64 if any(t.dtype == torch.float64 for _, t in named) else torch.float32
        extra: dict[str, Any] = {}
        if self.needs_stats:
            if stats is not None:
                stats = list(stats)
                if len(stats) != len(tensors):
                    raise DataError(f"got statistics for {len(stats)} models, tensors of {len(tensors)}")
                _check_stats(stats)
                stats = [s.to(work) for s in stats]
            extra["stats"] = stats
        elif stats is not None:
            raise ConfigError(f"merge method '{self.name}' takes no statistics")
        if prepared is not None:
            if self.prepare is None or len(prepared) != len(tensors):
                raise ConfigError(f"merge method '{self.name}': 'prepared' needs its prepare, one per model")
            extra["prepared"] = prepared
        out = self.fn(
            [t.to(work) for t in tensors],
            None if base is None else base.to(work),
            p,
            w,
            generator=generator,
            **extra,
        )
        return out.to(tensors[0].dtype)

    __call__ = merge

    def _check_count(self, n: int) -> None:
        lo, hi = self.num_models
        if n < lo or (hi is not None and n > hi):
            if hi == lo:
                want = f"exactly {lo}"
            elif hi is None:
                want = f"at least {lo}"
            else:
                want = f"{lo} to {hi}"
            plural = "" if want.endswith(" 1") else "s"
            raise ConfigError(f"merge method '{self.name}' needs {want} model{plural}, got {n}")

    def _check_weights(self, weights: list[float] | None, n: int) -> list[float]:
        if weights is None:
            return [1.0] * n
        if not self.takes_weights:
            raise ConfigError(f"merge method '{self.name}' takes no per-model weights")
        w = [float(x) for x in weights]
        if len(w) != n:
            raise ConfigError(f"merge method '{self.name}': got {len(w)} weights for {n} models")
        if not all(math.isfinite(x) for x in w):
            raise ConfigError(f"merge method '{self.name}': weights must be finite, got {w}")
        if not self.negative_weights and any(x < 0 for x in w):
            raise ConfigError(f"merge method '{self.name}': weights must be >= 0, got {w}")
        return w


def _check_tensors(named: list[tuple[str, Tensor]], finite: bool = False) -> None:
    first_name, first = named[0]
    for what, t in named:
        if not isinstance(t, Tensor):
            raise DataError(f"{what}: expected a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise DataError(f"{what}: cannot merge a {t.dtype} tensor (only floating-point parameters)")
        if t.shape != first.shape:
            raise DataError(
                f"shape mismatch: {first_name} has {tuple(first.shape)}, {what} has {tuple(t.shape)}"
            )
        if not finite and not all_finite(t):
            ok = torch.isfinite(t)
            nan = int(torch.isnan(t).sum())
            inf = int((~ok).sum()) - nan
            raise DataError(f"{what} has non-finite values ({nan} NaN, {inf} inf)")


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite. Fast path: one reduction, no temporary. Under IEEE arithmetic any
    NaN or inf entry makes the sum NaN or inf, so a finite sum proves every entry finite; a non-finite sum (an
    overflow of finite entries, or a real NaN / inf) is settled by the exact elementwise test. The elementwise
    test alone allocates a boolean tensor as large as ``t``: it was ~85% of a linear merge's time."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _check_stats(stats: list[Tensor]) -> None:
    for i, s in enumerate(stats):
        if not isinstance(s, Tensor) or not s.is_floating_point():
            raise DataError(f"statistics of model {i}: expected a floating-point tensor")
        if not all_finite(s):
            raise DataError(f"statistics of model {i} have non-finite values")


def merge_method(
    name: str,
    *,
    Params: type[BaseModel],  # noqa: N803  (the interface's attribute name)
    needs_base: bool,
    num_models: tuple[int, int | None] = (1, None),
    negative_weights: bool = False,
    takes_weights: bool = True,
    stochastic: bool = False,
    needs_stats: str | None = None,
    stats_params: tuple[str, ...] = (),
    repeated_tasks: bool = False,
    elementwise: bool = False,
    prepare: PrepareFn | None = None,
) -> Callable[[Any], MergeMethod]:
    """Wrap a pure merge function into a :class:`MergeMethod` and register it under ``name``
    (``needs_stats``: a data-dependent method, whose function also takes ``stats``)."""

    def deco(fn: Any) -> MergeMethod:
        method = MergeMethod(
            name=name,
            Params=Params,
            needs_base=needs_base,
            num_models=num_models,
            fn=fn,
            negative_weights=negative_weights,
            takes_weights=takes_weights,
            stochastic=stochastic,
            needs_stats=needs_stats,
            stats_params=stats_params,
            repeated_tasks=repeated_tasks,
            elementwise=elementwise,
            prepare=prepare,
        )
        if (stochastic or needs_stats) and elementwise:  # blocks would change the masks or need sliced stats
            raise ValueError(f"merge method '{name}': an elementwise method is deterministic, without stats")
        return MERGE_METHODS.register(name)(method)

    return deco


def get_method(name: str) -> MergeMethod:
    """A merge method by name (``unknown merge method 'x'; choose from [...]`` otherwise)."""
    return MERGE_METHODS.get(name)


def tensor_generator(seed: int, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from (seed, tensor name): the same masks for a tensor whatever the merge order."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return g


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")
