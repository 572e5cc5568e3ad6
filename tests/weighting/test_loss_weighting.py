"""Loss-level weighting methods: formulas on hand-made inputs, hooks, checkpoint state and hyperparameters.

Also, for every registered method (loss- and gradient-level), the state round trip a checkpoint makes:
``state_dict`` through ``json`` (plus ``tensor_state_dict``) into a fresh instance, which must then continue
exactly like the original.

Parity (skipped when the reference is not installed; test-only: ``torchjd==0.18.0``, ``libmtl==1.1.5``):
TorchJD's scalarizers ``UW``, ``DWA``, ``GeometricMean``, ``Random``, ``FAMO``, ``STCH`` on the same losses
(rtol 1e-12, FAMO 1e-6: TorchJD keeps its logits in float32, ours in float64; ``Random`` with the global
generator seeded with our per-step seed), and LibMTL's ``UW`` (its ``s = -0.5`` start: ``init_log_var=-0.5``),
``DWA``, ``GLS``, ``RLW`` (loss values, 1e-6: LibMTL works in float32). GradNorm is not compared: LibMTL
learns softmax-parametrised weights with the model's optimizer inside its trainer (another parametrisation),
and TorchJD has none.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mtfuse.config import WeightingConfig
from mtfuse.errors import ConfigError
from mtfuse.params import params_check
from mtfuse.weighting import WEIGHTINGS, Weighting
from mtfuse.weighting.dwa import dwa_weights
from mtfuse.weighting.famo import famo_logit_grad
from mtfuse.weighting.gradnorm import gradnorm_loss, renormalise
from mtfuse.weighting.rlw import rlw_weights, step_seed

F64 = torch.float64
TASKS = ["a", "b", "c"]


def build(name: str, tasks: list[str] = TASKS, **params: Any) -> Weighting:
    cls = WEIGHTINGS.get(name)
    p = cls.Params.model_validate(params) if cls.Params is not None else None
    return cls(tasks, p, dict.fromkeys(tasks, 1.0))


def val(x: torch.Tensor) -> float:
    return float(x.detach())


def losses_of(values: list[float], requires_grad: bool = False) -> dict[str, torch.Tensor]:
    return {
        t: torch.tensor(v, dtype=F64, requires_grad=requires_grad) for t, v in zip(TASKS, values, strict=True)
    }


def test_loss_level_methods_are_registered() -> None:
    loss_level = [n for n in WEIGHTINGS.names() if not WEIGHTINGS.get(n).is_gradient_method]
    assert loss_level == ["dwa", "equal", "famo", "gls", "gradnorm", "rlw", "static", "stch", "uncertainty"]
    assert WEIGHTINGS.get("famo").needs_updated_losses and WEIGHTINGS.get("gradnorm").needs_shared_layer_grads
    flags = [n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).needs_updated_losses]
    assert flags == ["famo"]
    assert [n for n in WEIGHTINGS.names() if build(n).parameters()] == ["uncertainty"]


# ------------------------------------------------------------------------------------------ formulas


def test_uncertainty() -> None:
    m = build("uncertainty")
    (s,) = m.parameters()
    assert isinstance(s, torch.nn.Parameter) and torch.equal(s.detach(), torch.zeros(3))
    with torch.no_grad():
        s.copy_(torch.tensor([0.0, 1.0, -1.0]))
    L = losses_of([2.0, 3.0, 0.5])
    expected = sum(0.5 * math.exp(-sv) * lv + 0.5 * sv for sv, lv in [(0.0, 2.0), (1.0, 3.0), (-1.0, 0.5)])
    assert math.isclose(float(m.combine(L, 0).detach()), expected, rel_tol=1e-6)
    assert m.weights() == pytest.approx({"a": 0.5, "b": 0.5 * math.exp(-1), "c": 0.5 * math.e}, rel=1e-6)
    # one task in the step: only its term
    assert math.isclose(
        float(m.combine({"b": L["b"]}, 0).detach()), 0.5 * math.exp(-1) * 3 + 0.5, rel_tol=1e-6
    )
    # learned jointly: gradient descent on s reaches the optimum s_t = log L_t
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        m.combine(L, 0).backward()
        opt.step()
    torch.testing.assert_close(s.detach(), torch.log(torch.tensor([2.0, 3.0, 0.5])), rtol=1e-4, atol=1e-4)
    assert math.isclose(
        build("uncertainty", init_log_var=-0.5).weights()["a"], 0.5 * math.exp(0.5), rel_tol=1e-6
    )


def test_dwa() -> None:
    m = build("dwa", temperature=2.0)
    for epoch_losses in ([[4.0, 2.0, 1.0], [2.0, 2.0, 1.0]], [[2.0, 1.0, 1.0], [2.0, 1.0, 1.0]]):
        assert m.weights() == dict.fromkeys(TASKS, 1.0)  # the first two epochs
        for values in epoch_losses:
            m.combine(losses_of(values), 0)
        m.end_epoch()
    # epoch averages [3, 2, 1] then [2, 1, 1]: ratios [2/3, 1/2, 1]
    r = np.array([2 / 3, 1 / 2, 1.0])
    expected = 3 * np.exp(r / 2) / np.exp(r / 2).sum()
    assert list(m.weights().values()) == pytest.approx(expected.tolist(), rel=1e-12)
    assert dwa_weights([3, 2, 1], [2, 1, 1], 2.0) == pytest.approx(expected.tolist(), rel=1e-12)
    assert math.isclose(float(m.combine(losses_of([1.0, 1.0, 1.0]), 0)), 3.0)
    # the loop may pass its own averages
    m.end_epoch({"a": 1.0, "b": 1.0, "c": 2.0})
    r = np.array([1 / 2, 1 / 1, 2 / 1])  # vs the previous epoch's average [2, 1, 1]
    expected = 3 * np.exp(r / 2) / np.exp(r / 2).sum()
    assert list(m.weights().values()) == pytest.approx(expected.tolist(), rel=1e-12)


def test_rlw() -> None:
    m = build("rlw", seed=3)
    assert m.weights() == pytest.approx(dict.fromkeys(TASKS, 1 / 3))
    L = losses_of([1.0, 2.0, 3.0])
    out = [float(m.combine(L, step)) for step in (0, 0, 1, 2)]
    assert out[0] == out[1] and len(set(out[1:])) == 3  # same step, same weights; new step, new weights
    w = rlw_weights(3, 3, 2)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6) and (w > 0).all()
    assert m.weights() == pytest.approx(dict(zip(TASKS, w.tolist(), strict=True)))
    assert math.isclose(out[3], float(w.double() @ torch.tensor([1.0, 2.0, 3.0], dtype=F64)), rel_tol=1e-6)
    assert not torch.equal(rlw_weights(3, 4, 2), w)


def test_gls() -> None:
    m = build("gls")
    L = losses_of([1.0, 8.0, 27.0], requires_grad=True)
    loss = m.combine(L, 0)
    assert math.isclose(float(loss.detach()), 6.0, rel_tol=1e-12)  # (1 * 8 * 27)^(1/3)
    loss.backward()
    grads = [float(L[t].grad) for t in TASKS]  # type: ignore[arg-type]
    assert grads == pytest.approx([6 / 3, 6 / 24, 6 / 81], rel=1e-12)
    assert list(m.weights().values()) == pytest.approx(grads, rel=1e-12)
    assert math.isclose(float(m.combine({"b": L["b"]}, 1).detach()), 8.0)


def test_famo() -> None:
    m = build("famo", lr=0.025, weight_decay=0.0)
    L = losses_of([1.0, 2.0, 4.0], requires_grad=True)
    loss = m.combine(L, 0)
    # z = 1/3 each, c = sum z / L: L = sum (z / c) log L_t; its gradient sum_t z_t / (c L_t) sums to 1
    z, Lv = np.full(3, 1 / 3), np.array([1.0, 2.0, 4.0])
    c = (z / (Lv + 1e-8)).sum()
    assert math.isclose(float(loss.detach()), float((z / c * np.log(Lv + 1e-8)).sum()), rel_tol=1e-9)
    loss.backward()
    g = np.array([float(L[t].grad) for t in TASKS])  # type: ignore[arg-type]
    assert g.sum() == pytest.approx(1.0) and g.tolist() == pytest.approx(
        (z / (c * (Lv + 1e-8))).tolist(), rel=1e-9
    )
    # after the model step: task a improved most (log 1 -> log 0.5), task c least; c gains weight
    m.update(losses_of([0.5, 1.5, 3.9]))
    delta = np.log(Lv + 1e-8) - np.log(np.array([0.5, 1.5, 3.9]) + 1e-8)
    grad = z * (delta - (z * delta).sum())
    after = torch.tensor([0.5, 1.5, 3.9], dtype=F64)
    ours = famo_logit_grad(torch.zeros(3, dtype=F64), torch.tensor(Lv), after)
    torch.testing.assert_close(ours, torch.from_numpy(grad), rtol=1e-6, atol=1e-12)
    logits = -0.025 * grad / (np.abs(grad) + 1e-8)  # Adam's first step: lr * sign(grad)
    w = np.exp(logits) / np.exp(logits).sum()
    assert list(m.weights().values()) == pytest.approx(w.tolist(), rel=1e-9)
    assert min(m.weights(), key=m.weights().__getitem__) == "a"
    with pytest.raises(ConfigError, match="joint"):
        m.combine({"a": L["a"]}, 1)
    with pytest.raises(ConfigError, match="unknown tasks"):
        build("famo", min_losses={"zzz": 0.0})


def test_stch() -> None:
    m = build("stch", mu=0.5, weights={"a": 0.5, "b": 0.3, "c": 0.2}, ideal={"a": 0.1})
    L = losses_of([1.0, 2.0, 3.0], requires_grad=True)
    y = np.array([0.5 * 0.9, 0.3 * 2.0, 0.2 * 3.0])
    loss = m.combine(L, 0)
    assert math.isclose(float(loss.detach()), 0.5 * math.log(np.exp(y / 0.5).sum()), rel_tol=1e-12)
    loss.backward()
    eff = np.array([0.5, 0.3, 0.2]) * np.exp(y / 0.5) / np.exp(y / 0.5).sum()
    assert [float(L[t].grad) for t in TASKS] == pytest.approx(eff.tolist(), rel=1e-12)  # type: ignore[arg-type]
    assert list(m.weights().values()) == pytest.approx(eff.tolist(), rel=1e-12)
    # small mu: the (smooth) maximum of the weighted losses; stable for large losses
    assert math.isclose(
        float(build("stch", mu=1e-3).combine(losses_of([1e4, 2e4, 3.0]), 0)), 2e4 / 3, rel_tol=1e-6
    )


def test_gradnorm() -> None:
    m = build("gradnorm", tasks=["a", "b"], alpha=1.5, lr=0.025)
    assert m.weights() == {"a": 1.0, "b": 1.0}
    L = {"a": torch.tensor(2.0, requires_grad=True), "b": torch.tensor(4.0, requires_grad=True)}
    assert math.isclose(float(m.combine(L, 0).detach()), 6.0)  # sets L(0) = (2, 4)
    # equal training rates (r = 1): the target is the mean norm; task a's gradient norm (1) is below it (2)
    shared = {"a": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([[0.0, 3.0]])}
    w = m.gradnorm_step(L, shared)
    assert w == pytest.approx({"a": 1.025, "b": 0.975}, rel=1e-6)  # one Adam step of lr, renormalised to 2
    assert math.isclose(sum(w.values()), 2.0)
    # by hand: sum_t |w_t n_t - mean(G) r_t^alpha|
    wt = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    g = torch.tensor([[1.0], [3.0]], dtype=F64)
    Lgrad = gradnorm_loss(
        wt, torch.tensor([1.0, 4.0], dtype=F64), g, torch.tensor([2.0, 4.0], dtype=F64), 1.0
    )
    G_, r = np.array([1.0, 6.0]), np.array([0.5, 1.0]) / 0.75
    assert math.isclose(float(Lgrad.detach()), float(np.abs(G_ - G_.mean() * r).sum()), rel_tol=1e-12)
    torch.testing.assert_close(
        renormalise(torch.tensor([1.0, 3.0, -1.0], dtype=F64)).sum(), torch.tensor(3.0, dtype=F64)
    )
    with pytest.raises(ConfigError, match="joint"):
        m.gradnorm_step({"a": L["a"]}, shared)


# ------------------------------------------------------------------------------------------ state round trip


def _run_steps(m: Weighting, start: int, n: int) -> list[Any]:
    """Drive a method like the loop would for ``n`` steps; return what it produced."""
    out: list[Any] = []
    K = len(m.tasks)
    for step in range(start, start + n):
        g = torch.Generator().manual_seed(step)
        values = (torch.rand(K, generator=g, dtype=F64) + 0.5).tolist()
        if m.is_gradient_method:
            G = torch.randn(K, 7, generator=g, dtype=F64)
            out.append(m.aggregate(G, torch.tensor(values, dtype=F64), step))  # type: ignore[attr-defined]
        else:
            L = {t: torch.tensor(v, dtype=F64) for t, v in zip(m.tasks, values, strict=True)}
            out.append(m.combine(L, step).detach())
            if m.needs_shared_layer_grads:
                m.gradnorm_step(L, {t: torch.randn(5, generator=g) for t in m.tasks})  # type: ignore[attr-defined]
            if m.needs_updated_losses:
                m.update({t: 0.9 * v for t, v in L.items()})
            for p in m.parameters():
                with torch.no_grad():
                    p.add_(0.1)
            if step % 2 == 1:
                m.end_epoch()
        out.append(m.weights())
    return out


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_state_round_trip(name: str) -> None:
    a = build(name)
    _run_steps(a, 0, 3)
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON types only
    tensors = {k: v.clone() for k, v in a.tensor_state_dict().items()}
    b = build(name)
    b.load_state_dict(state)
    b.load_tensor_state_dict(tensors)
    assert json.dumps(b.state_dict()) == json.dumps(a.state_dict())
    for x, y in zip(_run_steps(a, 3, 3), _run_steps(b, 3, 3), strict=True):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), name
        else:
            assert x == y, name


@pytest.mark.parametrize("name", ["moco", "db_mtl", "excess_mtl"])
def test_large_state_is_tensor_state(name: str) -> None:
    m = build(name)
    _run_steps(m, 0, 1)
    assert set(m.tensor_state_dict()) and all(t.shape == (3, 7) for t in m.tensor_state_dict().values())
    fresh = build(name)
    fresh.load_state_dict(json.loads(json.dumps(m.state_dict())))  # JSON only: the tensors are missing
    with pytest.raises(RuntimeError, match="tensor state"):
        _run_steps(fresh, 1, 1)


# ------------------------------------------------------------------------------------------ hyperparameters


@pytest.mark.parametrize("name", [n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).Params is not None])
def test_params_forbid_unknown_keys(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown config key 'weighting.no_such_key'"):
        params_check(WEIGHTINGS.get(name), WeightingConfig(method=name, no_such_key=1), "weighting")


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("cagrad", {"c": -0.1}),
        ("cagrad", {"rescale": 3}),
        ("mgda", {"normalization": "l1"}),
        ("mgda", {"solver": "cvxpy"}),
        ("gradvac", {"beta": 1.5}),
        ("graddrop", {"leak": 2.0}),
        ("fairgrad", {"alpha": -1.0}),
        ("nash_mtl", {"update_weights_every": 0}),
        ("aligned_mtl", {"scale_mode": "max"}),
        ("upgrad", {"reg_eps": -1.0}),
        ("moco", {"beta": 0.0}),
        ("db_mtl", {"beta": 2.0}),
        ("excess_mtl", {"robust_step_size": 0.0}),
        ("dwa", {"temperature": 0.0}),
        ("stch", {"mu": 0.0}),
        ("rlw", {"seed": -1}),
        ("famo", {"lr": -1.0}),
        ("gradnorm", {"alpha": -1.0}),
        ("pcgrad", {"seed": "x"}),
    ],
)
def test_params_validation(name: str, bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WEIGHTINGS.get(name).Params.model_validate(bad)  # type: ignore[union-attr]
    with pytest.raises(ConfigError):
        params_check(WEIGHTINGS.get(name), WeightingConfig(method=name, **bad), "weighting")


def test_params_without_a_model() -> None:
    for name in ("gls", "imtl", "config", "sum", "mean", "equal"):
        with pytest.raises(ConfigError, match="takes no parameters"):
            params_check(WEIGHTINGS.get(name), WeightingConfig(method=name, c=1), "weighting")
    p = params_check(WEIGHTINGS.get("cagrad"), WeightingConfig(method="cagrad", c=0.2), "weighting")
    assert WEIGHTINGS.get("cagrad")(TASKS, p, {}).params.c == 0.2  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ parity


@pytest.fixture(scope="module")
def tjs() -> Any:
    pytest.importorskip("torchjd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("torchjd.scalarization")


def test_torchjd_scalarizers(tjs: Any) -> None:
    seq = [[1.0, 2.0, 4.0], [0.8, 1.9, 3.0], [0.7, 1.5, 2.9], [0.5, 1.4, 2.0], [0.4, 1.0, 1.9]]
    # UW
    uw, ours = tjs.UW(3), build("uncertainty")
    with torch.no_grad():
        uw.log_var.copy_(torch.tensor([0.2, -0.3, 0.5]))
        ours.parameters()[0].copy_(torch.tensor([0.2, -0.3, 0.5]))
    for v in seq:
        assert math.isclose(val(ours.combine(losses_of(v), 0)), val(uw(torch.tensor(v))), rel_tol=1e-6)
    # DWA: 2 batches per epoch, 4 epochs
    dwa, ours = tjs.DWA(temperature=2.0), build("dwa", temperature=2.0)
    for epoch in range(4):
        for v in seq[epoch : epoch + 2]:
            assert math.isclose(
                val(ours.combine(losses_of(v), 0)), val(dwa(torch.tensor(v, dtype=F64))), rel_tol=1e-12
            )
        ours.end_epoch()
        dwa.step()
    # GeometricMean (GLS), STCH
    gls, ours = tjs.GeometricMean(), build("gls")
    stch = tjs.STCH(
        0.3,
        weights=torch.tensor([0.5, 0.3, 0.2], dtype=F64),
        reference=torch.tensor([0.1, 0.0, 0.2], dtype=F64),
    )
    ours_stch = build("stch", mu=0.3, weights={"a": 0.5, "b": 0.3, "c": 0.2}, ideal={"a": 0.1, "c": 0.2})
    for v in seq:
        t = torch.tensor(v, dtype=F64)
        assert math.isclose(val(ours.combine(losses_of(v), 0)), val(gls(t)), rel_tol=1e-12)
        assert math.isclose(val(ours_stch.combine(losses_of(v), 0)), val(stch(t)), rel_tol=1e-12)
    # Random (RLW): the global generator seeded like our per-step generator
    ours = build("rlw", seed=5)
    for step in range(3):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_seed(5, step))
            ref = tjs.Random()(torch.tensor(seq[step]))
        assert math.isclose(val(ours.combine(losses_of(seq[step]), step)), val(ref), rel_tol=1e-6)
    # FAMO: combine, then update with the post-step losses
    famo, ours = tjs.FAMO(3, lr=0.025, weight_decay=1e-3), build("famo", lr=0.025, weight_decay=1e-3)
    for before, after in zip(seq, seq[1:], strict=False):
        assert math.isclose(
            val(ours.combine(losses_of(before), 0)), val(famo(torch.tensor(before))), rel_tol=1e-6
        )
        ours.update(losses_of(after))
        famo.update(torch.tensor(after))
    z = torch.softmax(famo._w.detach(), 0)
    assert list(ours.weights().values()) == pytest.approx(z.tolist(), rel=1e-6)


def _libmtl(cls: type, **attrs: Any) -> Any:
    obj = cls()
    obj.task_num, obj.device, obj.rep_grad = 3, torch.device("cpu"), False
    for k, v in attrs.items():
        setattr(obj, k, v)
    obj.init_param()
    return obj


def test_libmtl_loss_weightings(libmtl: Any) -> None:
    v = [0.5, 1.5, 3.0]
    # UW: L_t / (2 e^s) + s / 2 from s = -0.5; returns the weights 1 / (2 e^s)
    uw, ours = _libmtl(libmtl.UW), build("uncertainty", init_log_var=-0.5)
    w = uw.backward(torch.tensor(v, requires_grad=True))
    assert list(ours.weights().values()) == pytest.approx(w.tolist(), rel=1e-6)
    # DWA from its per-epoch loss buffer
    buf = np.array([[3.0, 2.0], [2.0, 1.0], [1.0, 1.0]])
    dwa, ours = _libmtl(libmtl.DWA, epoch=2, train_loss_buffer=buf), build("dwa", temperature=2.0)
    ours.end_epoch(dict(zip(TASKS, buf[:, 0], strict=True)))
    ours.end_epoch(dict(zip(TASKS, buf[:, 1], strict=True)))
    w = dwa.backward(torch.tensor(v, requires_grad=True), T=2.0)
    assert list(ours.weights().values()) == pytest.approx(w.tolist(), rel=1e-6)
    # GLS: compare the loss through its gradient (LibMTL returns L / (K prod L), not the gradient weights)
    L = torch.tensor(v, requires_grad=True)
    _libmtl(libmtl.GLS).backward(L)
    L2 = losses_of(v, requires_grad=True)
    build("gls").combine(L2, 0).backward()
    assert [float(L2[t].grad) for t in TASKS] == pytest.approx(L.grad.tolist(), rel=1e-6)  # type: ignore[arg-type]
    # RLW (Normal): softmax of N(0, 1) draws from the global generator
    ours = build("rlw", seed=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(2, 7))
        w = _libmtl(libmtl.RLW).backward(torch.tensor(v, requires_grad=True), dist="Normal")
    ours.combine(losses_of(v), 7)
    assert list(ours.weights().values()) == pytest.approx(w.tolist(), rel=1e-6)
