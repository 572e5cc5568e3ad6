"""Task samplers: which task's batch comes next in multi-task training.

Every sampler is registered in ``SAMPLERS`` under its config name (``sampling.method``) and is built as::

    SAMPLERS.get(name)(sizes, params, seed=..., steps_per_epoch=..., num_epochs=...)

``sizes`` maps task name -> number of training examples, in config order. ``params`` is an instance of the
class's ``Params`` model (already validated by ``params.params_check``); ``None``, an empty model or a plain
dict are accepted too. ``step`` is the 0-based global training step (the number of batches drawn so far).

Random samplers draw by inverse-CDF from their own ``numpy.random.Generator(PCG64(seed))``: one uniform number
per step, so the sequence depends only on the seed and the probabilities, and ``state_dict`` (the generator
state plus counters, JSON-serialisable) makes a resumed run continue the exact same sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mtfuse.errors import ConfigError
from mtfuse.registry import Registry


class TaskSampler:
    """Base class. Subclasses set ``name`` and ``Params`` and implement ``_probs``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel] | None] = None

    def __init__(
        self,
        sizes: Mapping[str, int],
        params: BaseModel | Mapping[str, Any] | None = None,
        seed: int = 0,
        steps_per_epoch: int = 1,
        num_epochs: float = 1.0,
    ) -> None:
        if not sizes:
            raise ValueError("a task sampler needs at least one task")
        bad = {t: n for t, n in sizes.items() if int(n) < 1}
        if bad:
            raise ValueError(f"every task needs at least one training example; got {bad}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        if not num_epochs > 0:
            raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
        self.tasks: list[str] = list(sizes)
        self.sizes: np.ndarray = np.array([int(sizes[t]) for t in self.tasks], dtype=np.float64)
        self.params: BaseModel | None = self._coerce_params(params)
        self.seed = int(seed)
        self.steps_per_epoch = int(steps_per_epoch)
        self.num_epochs = float(num_epochs)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self.draws = 0
        self.counts: dict[str, int] = {t: 0 for t in self.tasks}

    @classmethod
    def _coerce_params(cls, params: BaseModel | Mapping[str, Any] | None) -> BaseModel | None:
        if cls.Params is None:
            given = params.model_dump() if isinstance(params, BaseModel) else dict(params or {})
            if given:
                raise ConfigError(f"sampling: '{cls.name}' takes no parameters, got {sorted(given)}")
            return None
        if isinstance(params, cls.Params):
            return params
        if params is None:
            return cls.Params()
        raw = params.model_dump() if isinstance(params, BaseModel) else dict(params)
        return cls.Params.model_validate(raw)

    # ------------------------------------------------------------------------------------------ public

    def probs(self, step: int) -> dict[str, float]:
        """The probability of each task at global step ``step`` (sums to 1)."""
        return dict(zip(self.tasks, (float(x) for x in self._probs(step)), strict=True))

    def sample(self, step: int) -> str:
        """The task whose batch is used at global step ``step``."""
        p = self._probs(step)
        u = self._rng.random()
        # Inverse CDF; the clip guards against cumsum rounding to slightly below 1.
        i = min(int(np.searchsorted(np.cumsum(p), u, side="right")), len(self.tasks) - 1)
        return self._record(i)

    def state_dict(self) -> dict[str, Any]:
        """Generator state and counters; plain JSON types (the PCG64 state is two Python ints)."""
        return {
            "method": self.name,
            "tasks": list(self.tasks),
            "rng": self._rng.bit_generator.state,
            "draws": self.draws,
            "counts": dict(self.counts),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"sampler state is for tasks {list(state['tasks'])}, not {self.tasks}")
        if state.get("method", self.name) != self.name:
            raise ValueError(f"sampler state is for method '{state['method']}', not '{self.name}'")
        self._rng.bit_generator.state = dict(state["rng"])
        self.draws = int(state["draws"])
        self.counts = {t: int(state["counts"][t]) for t in self.tasks}

    # --------------------------------------------------------------------------------------- internals

    def _probs(self, step: int) -> np.ndarray:
        raise NotImplementedError

    def _record(self, i: int) -> str:
        task = self.tasks[i]
        self.draws += 1
        self.counts[task] += 1
        return task

    def epoch(self, step: int) -> int:
        """1-based epoch of ``step``, clipped to the last epoch ``ceil(num_epochs)``."""
        return min(step // self.steps_per_epoch + 1, math.ceil(self.num_epochs))


def _power_probs(sizes: np.ndarray, exponent: float) -> np.ndarray:
    """``p_t = N_t^a / sum_j N_j^a``, computed as a softmax of ``a * log N`` so that no power overflows."""
    logits = exponent * np.log(sizes)
    w = np.exp(logits - logits.max())
    return w / w.sum()


SAMPLERS: Registry[type[TaskSampler]] = Registry("sampler")


@SAMPLERS.register("uniform")
class UniformSampler(TaskSampler):
    """``p_t = 1 / K``: every task equally often, whatever its size (the T -> infinity end of temperature
    sampling, Arivazhagan et al. 2019, arXiv:1907.05019)."""

    name = "uniform"

    def _probs(self, step: int) -> np.ndarray:
        return np.full(len(self.tasks), 1.0 / len(self.tasks))


@SAMPLERS.register("proportional")
class ProportionalSampler(TaskSampler):
    """``p_t = N_t / sum_j N_j``: examples-proportional mixing (every example seen about equally often;
    Raffel et al., JMLR 2020, T5 section 3.5.2)."""

    name = "proportional"

    def _probs(self, step: int) -> np.ndarray:
        return self.sizes / self.sizes.sum()


class TemperatureParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(2.0, gt=0)  # T; 1 = proportional, -> inf = uniform
    cap: int | None = Field(None, gt=0)  # the T5 "artificial dataset size limit" K


@SAMPLERS.register("temperature")
class TemperatureSampler(TaskSampler):
    """``p_t = min(N_t, cap)^(1/T) / sum_j min(N_j, cap)^(1/T)``.

    Examples-proportional mixing with a size limit and temperature scaling, as in T5 (Raffel et al., 2020,
    sec. 3.5.2), mT5 and XLM (Lample & Conneau, 2019, whose ``alpha = 1/T = 0.5``). ``T = 1`` is
    proportional sampling, ``T -> inf`` tends to uniform; ``cap`` (None = no limit) bounds each task's size.
    """

    name = "temperature"
    Params = TemperatureParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p: TemperatureParams = self.params  # type: ignore[assignment]
        capped = self.sizes if p.cap is None else np.minimum(self.sizes, float(p.cap))
        self._p = _power_probs(capped, 1.0 / p.temperature)  # constant over training

    def _probs(self, step: int) -> np.ndarray:
        return self._p


@SAMPLERS.register("annealed")
class AnnealedSampler(TaskSampler):
    """``p_t = N_t^alpha / sum_j N_j^alpha`` with ``alpha = 1 - 0.8 (e - 1) / (E - 1)``.

    Annealed sampling of Stickland & Murray (2019), "BERT and PALs", sec. 4: proportional in the first epoch
    (``alpha = 1``), moving towards uniform, down to ``alpha = 0.2`` in the last. ``e`` is the 1-based epoch
    of the step (``step // steps_per_epoch + 1``, clipped to ``E``) and ``E = ceil(num_epochs)``; with a
    single epoch ``alpha = 1``.
    """

    name = "annealed"

    def alpha(self, step: int) -> float:
        total = math.ceil(self.num_epochs)
        if total <= 1:
            return 1.0
        return 1.0 - 0.8 * (self.epoch(step) - 1) / (total - 1)

    def _probs(self, step: int) -> np.ndarray:
        return _power_probs(self.sizes, self.alpha(step))


@SAMPLERS.register("round_robin")
class RoundRobinSampler(TaskSampler):
    """Deterministic cycle through the tasks in config order: step ``s`` goes to task ``s mod K`` (round-robin
    batch-level sampling, McCann et al. 2018, decaNLP, arXiv:1806.08730)."""

    name = "round_robin"

    def _probs(self, step: int) -> np.ndarray:
        p = np.zeros(len(self.tasks))
        p[step % len(self.tasks)] = 1.0
        return p

    def sample(self, step: int) -> str:
        # Driven by the step alone, so resuming needs no RNG state and matches probs(step) exactly.
        return self._record(step % len(self.tasks))
