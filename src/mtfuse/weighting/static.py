"""Static weighting: L = sum_t w_t L_t with fixed w_t (linear scalarisation).

w_t comes from ``weighting.weights`` when given there, else from the task's ``loss_weight`` (default 1, so
the default config is equal weighting). A fixed weighted sum of the objectives is the linear scalarisation of
multi-objective optimisation (Zadeh, "Optimality and non-scalar-valued performance criteria", IEEE TAC 1963);
see Kurin et al., "In Defense of the Unitary Scalarization for Deep Multi-Task Learning", NeurIPS 2022
(https://arxiv.org/abs/2201.04122) for how strong a baseline it is.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from mtfuse.errors import ConfigError
from mtfuse.weighting.base import Weighting, register


class StaticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: dict[str, float] = {}

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not w >= 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        return v


@register("static")
class Static(Weighting):
    Params = StaticParams

    def __init__(self, tasks: list[str], params: StaticParams | None, task_weights: dict[str, float]) -> None:
        super().__init__(tasks, params, task_weights)
        given = params.weights if params is not None else {}
        unknown = sorted(set(given) - set(tasks))
        if unknown:
            raise ConfigError(f"weighting.weights names unknown tasks {unknown}; choose from {self.tasks}")
        self._w = {t: float(given.get(t, task_weights.get(t, 1.0))) for t in tasks}

    def weights(self) -> dict[str, float]:
        return dict(self._w)
