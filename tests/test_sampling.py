"""Task samplers: the formulas, empirical frequencies, determinism and save/restore, parameter checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from mtfuse.config import SamplingConfig
from mtfuse.errors import ConfigError
from mtfuse.params import params_check
from mtfuse.sampling import SAMPLERS, AnnealedSampler, TaskSampler

SIZES = {"cola": 8500, "mrpc": 3700, "rte": 2500, "wnli": 600}
ALL = ["annealed", "proportional", "round_robin", "temperature", "uniform"]


def make(method: str, sizes: dict[str, int] = SIZES, seed: int = 0, **params: object) -> TaskSampler:
    cls = SAMPLERS.get(method)
    p = cls.Params.model_validate(params) if cls.Params is not None else None
    return cls(sizes, p, seed=seed, steps_per_epoch=25, num_epochs=4)


def vec(p: dict[str, float]) -> np.ndarray:
    return np.array([p[t] for t in SIZES])


def test_registry_names() -> None:
    assert SAMPLERS.names() == ALL
    with pytest.raises(ConfigError, match="unknown sampler 'magic'"):
        SAMPLERS.get("magic")


@pytest.mark.parametrize("method", ALL)
def test_probs_sum_to_one_in_task_order(method: str) -> None:
    s = make(method)
    for step in (0, 1, 30, 99, 10_000):
        p = s.probs(step)
        assert list(p) == list(SIZES)
        assert sum(p.values()) == pytest.approx(1.0)
        assert all(v >= 0 for v in p.values())


def test_uniform_and_proportional() -> None:
    assert vec(make("uniform").probs(0)) == pytest.approx(np.full(4, 0.25))
    n = np.array(list(SIZES.values()), dtype=float)
    assert vec(make("proportional").probs(0)) == pytest.approx(n / n.sum())


def test_temperature_formula() -> None:
    n = np.array(list(SIZES.values()), dtype=float)
    assert vec(make("temperature", temperature=1.0).probs(0)) == pytest.approx(
        vec(make("proportional").probs(0))
    )
    w = np.sqrt(n)  # default T = 2
    assert vec(make("temperature").probs(0)) == pytest.approx(w / w.sum())
    assert vec(make("temperature", temperature=1e6).probs(0)) == pytest.approx(np.full(4, 0.25), abs=1e-5)
    # cap: the two largest tasks are clipped to 3000 examples
    capped = np.minimum(n, 3000.0)
    assert vec(make("temperature", temperature=1.0, cap=3000).probs(0)) == pytest.approx(
        capped / capped.sum()
    )
    # a tiny temperature must not overflow: all mass on the largest task
    assert vec(make("temperature", temperature=0.001).probs(0)) == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_annealed_alpha_and_probs() -> None:
    s = make("annealed")  # 25 steps per epoch, 4 epochs
    assert isinstance(s, AnnealedSampler)
    n = np.array(list(SIZES.values()), dtype=float)
    assert s.alpha(0) == 1.0 and s.alpha(24) == 1.0
    assert s.alpha(25) == pytest.approx(1 - 0.8 / 3)
    assert s.alpha(75) == pytest.approx(0.2) and s.alpha(99) == pytest.approx(0.2)
    assert s.alpha(10_000) == pytest.approx(0.2)  # clipped to the last epoch
    assert vec(s.probs(0)) == pytest.approx(n / n.sum())
    w = n**0.2
    assert vec(s.probs(80)) == pytest.approx(w / w.sum())
    # one epoch: alpha = 1 throughout; a fractional last epoch counts (E = ceil(num_epochs))
    one = SAMPLERS.get("annealed")(SIZES, None, seed=0, steps_per_epoch=25, num_epochs=1)
    assert one.alpha(0) == 1.0 and one.alpha(500) == 1.0  # type: ignore[attr-defined]
    frac = SAMPLERS.get("annealed")(SIZES, None, seed=0, steps_per_epoch=10, num_epochs=2.5)
    assert frac.alpha(25) == pytest.approx(0.2)  # type: ignore[attr-defined]


def test_round_robin_order() -> None:
    s = make("round_robin")
    seq = [s.sample(i) for i in range(9)]
    assert seq == ["cola", "mrpc", "rte", "wnli", "cola", "mrpc", "rte", "wnli", "cola"]
    assert s.probs(6) == {"cola": 0.0, "mrpc": 0.0, "rte": 1.0, "wnli": 0.0}
    assert s.counts == {"cola": 3, "mrpc": 2, "rte": 2, "wnli": 2}


@pytest.mark.parametrize("method", ["uniform", "proportional", "temperature"])
def test_empirical_frequencies(method: str) -> None:
    # 20k draws: the standard error of a frequency is <= 0.0036, so 0.015 is over 4 standard errors.
    s = make(method, seed=123)
    draws = 20_000
    for step in range(draws):
        s.sample(step)
    freq = np.array([s.counts[t] / draws for t in SIZES])
    assert freq == pytest.approx(vec(s.probs(0)), abs=0.015)
    assert s.draws == draws


def test_annealed_empirical_frequencies_follow_the_epoch() -> None:
    s = SAMPLERS.get("annealed")(SIZES, None, seed=7, steps_per_epoch=10_000, num_epochs=2)
    first = np.zeros(4)
    for step in range(10_000):
        first[list(SIZES).index(s.sample(step))] += 1
    last = np.zeros(4)
    for step in range(10_000, 20_000):
        last[list(SIZES).index(s.sample(step))] += 1
    assert first / 10_000 == pytest.approx(vec(s.probs(0)), abs=0.02)
    assert last / 10_000 == pytest.approx(vec(s.probs(10_000)), abs=0.02)


@pytest.mark.parametrize("method", ALL)
def test_deterministic_given_seed(method: str) -> None:
    s1, s2 = make(method, seed=5), make(method, seed=5)
    a = [s1.sample(i) for i in range(200)]
    b = [s2.sample(i) for i in range(200)]
    assert a == b
    if method != "round_robin":
        s3 = make(method, seed=6)
        assert [s3.sample(i) for i in range(200)] != a


@pytest.mark.parametrize("method", ALL)
def test_save_restore_gives_identical_sequence(method: str) -> None:
    ref = make(method, seed=11)
    full = [ref.sample(i) for i in range(100)]

    s = make(method, seed=11)
    head = [s.sample(i) for i in range(40)]
    state = json.loads(json.dumps(s.state_dict()))  # must survive a JSON round trip
    for _ in range(7):  # advance the original further: the restore must not depend on it
        s.sample(0)

    fresh = make(method, seed=999)  # a different seed: everything must come from the state
    fresh.load_state_dict(state)
    tail = [fresh.sample(i) for i in range(40, 100)]
    assert head + tail == full
    assert fresh.draws == 100 and sum(fresh.counts.values()) == 100
    assert fresh.counts == ref.counts


def test_state_for_other_tasks_is_rejected() -> None:
    state = make("uniform").state_dict()
    other = SAMPLERS.get("uniform")({"a": 1, "b": 2}, None, seed=0, steps_per_epoch=1, num_epochs=1)
    with pytest.raises(ValueError, match="tasks"):
        other.load_state_dict(state)


def test_params_accepts_none_empty_model_and_dict() -> None:
    class Empty(BaseModel):
        pass

    for p in (None, Empty()):
        SAMPLERS.get("uniform")(SIZES, p, seed=0, steps_per_epoch=1, num_epochs=1)
    s = SAMPLERS.get("temperature")(SIZES, None, seed=0, steps_per_epoch=1, num_epochs=1)
    assert s.params.temperature == 2.0  # type: ignore[union-attr]
    s = SAMPLERS.get("temperature")(SIZES, {"temperature": 1.0}, seed=0, steps_per_epoch=1, num_epochs=1)
    assert vec(s.probs(0)) == pytest.approx(vec(make("proportional").probs(0)))
    with pytest.raises(ConfigError, match="takes no parameters"):
        SAMPLERS.get("uniform")(SIZES, {"temperature": 2.0}, seed=0, steps_per_epoch=1, num_epochs=1)


@pytest.mark.parametrize("bad", [{"temperature": 0}, {"temperature": -1.0}, {"cap": 0}, {"temp": 2.0}])
def test_invalid_params_raise_validation_error(bad: dict[str, object]) -> None:
    params = SAMPLERS.get("temperature").Params
    assert params is not None
    with pytest.raises(ValidationError):
        params.model_validate(bad)


def test_params_check_through_config() -> None:
    cls = SAMPLERS.get("temperature")
    p = params_check(cls, SamplingConfig.model_validate({"method": "temperature", "cap": 100}), "sampling")
    assert p.cap == 100  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown config key 'sampling.temp'"):
        params_check(cls, SamplingConfig.model_validate({"method": "temperature", "temp": 2}), "sampling")
    with pytest.raises(ConfigError, match="takes no parameters"):
        params_check(
            SAMPLERS.get("uniform"), SamplingConfig.model_validate({"method": "uniform", "x": 1}), "s"
        )


def test_bad_sizes_and_schedule() -> None:
    cls = SAMPLERS.get("proportional")
    with pytest.raises(ValueError):
        cls({}, None, seed=0, steps_per_epoch=1, num_epochs=1)
    with pytest.raises(ValueError):
        cls({"a": 0, "b": 3}, None, seed=0, steps_per_epoch=1, num_epochs=1)
    with pytest.raises(ValueError):
        cls({"a": 1}, None, seed=0, steps_per_epoch=0, num_epochs=1)
