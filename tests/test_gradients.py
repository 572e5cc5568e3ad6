"""``mtfuse.gradients``: the task-gradient matrix, its float64 Gramian and the gradient-cosine diagnostics."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from mtfuse.gradients import (
    cosine_matrix,
    gramian,
    streamed_task_gradients,
    task_gradient_matrix,
    write_gradient,
)
from mtfuse.weighting.cagrad import cagrad_weights
from mtfuse.weighting.fairgrad import fairgrad_weights
from mtfuse.weighting.nash_mtl import nash_mtl_weights
from mtfuse.weighting.upgrad import upgrad_weights

F64 = torch.float64


def opposed(P: int = 4096, one_plus_cos: float = 1e-7, seed: int = 0) -> torch.Tensor:
    """Float32 gradients: tasks 0 and 1 nearly opposed (``1 + cos ~ one_plus_cos``), task 2 unrelated."""
    g = torch.Generator().manual_seed(seed)
    u, v, w = torch.randn(3, P, generator=g, dtype=F64)
    v -= (v @ u) / (u @ u) * u
    u, v = u / u.norm(), v / v.norm()
    delta = (2 * one_plus_cos) ** 0.5  # 1 + cos(u, -u + delta v) ~ delta^2 / 2
    return torch.stack([u, -u + delta * v, 0.3 * w / w.norm() + 0.5 * u]).float()


def test_gramian_is_float64_and_exact_for_float32_gradients() -> None:
    G = opposed()
    Q = gramian(G)
    assert Q.dtype == F64 and Q.device == G.device
    torch.testing.assert_close(Q, G.double() @ G.double().T, rtol=1e-13, atol=1e-15)
    # accumulated block by block: the same to rounding whatever the block size
    torch.testing.assert_close(gramian(G, block=1000), Q, rtol=1e-13, atol=1e-15)
    G64 = G.double()
    assert gramian(G64).dtype == F64


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("cagrad", lambda Q: cagrad_weights(Q, 0.4, 1)),
        ("fairgrad", lambda Q: fairgrad_weights(Q, 1.0)),
        ("nash_mtl", lambda Q: nash_mtl_weights(Q, max_norm=0.0)),
        ("upgrad", lambda Q: upgrad_weights(Q)),
    ],
)
def test_nearly_opposed_gradients_give_the_weights_of_the_exact_gramian(name: str, weights: Any) -> None:
    """Issue 8: with 1 + cos = 1e-7 a float32 Gramian moved these methods' weights by 20-54%."""
    G = opposed()
    exact = weights(G.double() @ G.double().T)
    torch.testing.assert_close(weights(gramian(G)), exact, rtol=1e-6, atol=0.0)
    if name != "cagrad":  # (the exact CAGrad solver happens to be insensitive on this G)
        in_float32 = weights((G @ G.T).double())
        assert float((in_float32 - exact).norm() / exact.norm()) > 5e-3  # the fault this guards against


def test_cosine_diagonal_is_exactly_one() -> None:
    """Issue 15: the diagonal was 0.9956 / 1.0005 (float32 rounding, e.g. under autocast)."""
    g = torch.Generator().manual_seed(1)
    G = (torch.randn(3, 100_000, generator=g) * torch.tensor([[1e-3], [1.0], [30.0]])).to(torch.bfloat16)
    C = cosine_matrix(G.float())
    assert C.dtype == F64
    assert C.diagonal().tolist() == [1.0, 1.0, 1.0]
    assert torch.equal(C, C.T) and float(C.abs().max()) <= 1.0
    ref = torch.nn.functional.cosine_similarity(G.double()[:, None], G.double()[None], dim=-1)
    torch.testing.assert_close(C, ref, rtol=1e-10, atol=1e-12)


def test_cosine_of_a_zero_gradient_is_zero() -> None:
    G = torch.tensor([[1.0, 2.0], [0.0, 0.0], [-2.0, -4.0]])
    C = cosine_matrix(G)
    assert C.tolist() == [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]


def test_task_gradient_matrix_and_write_gradient() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    out = lin(x)
    losses = [out[:, 0].pow(2).mean(), out[:, 1].abs().mean()]
    params = list(lin.parameters())
    G = task_gradient_matrix(losses, params, retain_last=True)
    assert G.shape == (2, sum(p.numel() for p in params)) and G.dtype == torch.float32
    for k, loss in enumerate(losses):
        ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])
        torch.testing.assert_close(G[k], ref)
    write_gradient(params, G.sum(0))
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in params]), G.sum(0))
    with pytest.raises(ValueError, match="entries"):
        write_gradient(params, torch.zeros(G.shape[1] + 1))


def test_task_gradient_matrix_fills_a_kept_buffer_in_place() -> None:
    """The training step keeps G's storage between steps: filled in place, stale values never survive."""
    torch.manual_seed(0)
    lin, unused = nn.Linear(3, 2), nn.Parameter(torch.ones(4))
    params = [*lin.parameters(), unused]

    def losses(seed: int) -> list[torch.Tensor]:
        out = lin(torch.randn(5, 3, generator=torch.Generator().manual_seed(seed)))
        return [out[:, 0].pow(2).mean(), out[:, 1].abs().mean()]

    fresh = task_gradient_matrix(losses(2), params)
    buf = torch.full_like(fresh, float("nan"))
    G = task_gradient_matrix(losses(2), params, out=buf)
    assert G.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(G, fresh, rtol=0, atol=0)
    assert torch.all(G[:, -4:] == 0)  # the unused parameter's columns: zeros, not the NaNs left in the buffer
    other = task_gradient_matrix(losses(3), params, out=G)  # the next step's batch overwrites every entry
    torch.testing.assert_close(other, task_gradient_matrix(losses(3), params), rtol=0, atol=0)
    wrong = torch.zeros(1, fresh.shape[1])  # a buffer of another shape is left alone
    again = task_gradient_matrix(losses(2), params, out=wrong)
    assert again.data_ptr() != wrong.data_ptr() and torch.all(wrong == 0)
    torch.testing.assert_close(again, fresh, rtol=0, atol=0)


def test_write_gradient_makes_views_not_copies() -> None:
    lin = nn.Linear(3, 2)
    params = list(lin.parameters())
    vector = torch.arange(8, dtype=torch.float32)
    write_gradient(params, vector)
    assert all(p.grad.untyped_storage().data_ptr() == vector.untyped_storage().data_ptr() for p in params)
    torch.testing.assert_close(lin.bias.grad, torch.tensor([6.0, 7.0]))
    write_gradient(params, vector, accumulate=True)  # accumulating adds in place
    torch.testing.assert_close(lin.weight.grad.reshape(-1), 2 * torch.arange(6, dtype=torch.float32))
    half = nn.Linear(3, 2).to(torch.bfloat16)  # another dtype: converted (a copy)
    write_gradient(list(half.parameters()), vector)
    assert half.weight.grad.dtype == torch.bfloat16


class _Recorder(torch.autograd.Function):
    """Identity that logs its forward and backward, to see when each task's graph is run."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, log: list[str], tag: str) -> torch.Tensor:
        ctx.log, ctx.tag = log, tag
        log.append(f"forward {tag}")
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        ctx.log.append(f"backward {ctx.tag}")
        return g, None, None


def _two_task_model() -> tuple[nn.Module, nn.ModuleDict]:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Tanh())  # dropout: draws random numbers
    heads = nn.ModuleDict({"a": nn.Linear(8, 2), "b": nn.Linear(8, 1), "unused": nn.Linear(8, 1)})
    return body, heads


def test_streamed_task_gradients_equal_forwarding_every_task_first() -> None:
    """The training step's streamed G (each task's forward right before its backward) is bit for bit the G and
    head gradients of forwarding every task first, dropout included: the same random draws in the same order."""
    body, heads = _two_task_model()
    shared = list(body.parameters())
    own = [p for h in heads.values() for p in h.parameters()]
    g = torch.Generator().manual_seed(1)
    batches = {"a": torch.randn(5, 6, generator=g), "b": torch.randn(3, 6, generator=g)}

    def loss(t: str) -> torch.Tensor:
        out = heads[t](body(batches[t]))
        return out.logsumexp(-1).mean() if t == "a" else out.pow(2).mean()

    torch.manual_seed(7)
    losses = [loss("a"), loss("b")]
    ref_G = task_gradient_matrix(losses, shared, retain_last=True)
    ref_own = torch.autograd.grad(sum(losses), own, allow_unused=True)

    torch.manual_seed(7)
    G, own_grads = streamed_task_gradients((loss(t) for t in ("a", "b")), 2, shared, own)
    torch.testing.assert_close(G, ref_G, rtol=0, atol=0)
    assert [g is None for g in own_grads] == [g is None for g in ref_own] == [False] * 4 + [True] * 2
    for got, ref in zip(own_grads, ref_own, strict=True):
        if ref is not None:
            torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_streamed_task_gradients_frees_each_graph_before_the_next_forward() -> None:
    body, heads = _two_task_model()
    log: list[str] = []

    def losses():
        for t in ("a", "b"):
            yield heads[t](_Recorder.apply(body(torch.ones(2, 6)), log, t)).sum()

    streamed_task_gradients(losses(), 2, list(body.parameters()))
    assert log == ["forward a", "backward a", "forward b", "backward b"]
    with pytest.raises(ValueError, match="1 losses for 2 rows"):
        streamed_task_gradients(iter([heads["a"](body(torch.ones(2, 6))).sum()]), 2, list(body.parameters()))
