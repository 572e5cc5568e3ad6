"""Per-task gradients on the shared parameters: what gradient-level methods and the conflict diagnostics use.

``task_gradient_matrix`` takes one task loss after another through ``torch.autograd.grad`` (the graph kept
between them) and stacks the flattened gradients of the SHARED parameters only into ``G [K, P]``; head
parameters never enter it. ``G`` lives as one matrix because every method needs all rows at once.
``streamed_task_gradients`` fills the same ``G`` from losses made one at a time (the training step runs each
task's forward on demand), so only one task's activations are alive at once.
``G`` is float32 (memory: K copies of the shared parameters); its Gramian ``G G^T`` and the cosines are
accumulated in float64 (:func:`gramian`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn


def task_gradient_matrix(
    losses: list[Tensor],
    params: list[nn.Parameter],
    retain_last: bool = False,
    out: Tensor | None = None,
) -> Tensor:
    """``G[k] = d losses[k] / d params`` flattened (zeros where a parameter is unused by that task).

    Each task's gradients are copied straight into their row, and freed before the next task's backward: no
    concatenated row and no stacked copy, so the step holds ``G`` and one task's gradients at most. ``out``, a
    float32 ``[K, P]`` buffer on the parameters' device, is filled in place and returned (the training step
    keeps one between steps: a fresh K x P allocation every step costs as much time as the copies)."""
    K = len(losses)
    G = _matrix(K, params, out)
    for k, loss in enumerate(losses):
        keep = retain_last or k < K - 1
        grads = torch.autograd.grad(loss, params, retain_graph=keep, allow_unused=True)
        _fill_row(G, k, grads, params)
        del grads
    return G


def streamed_task_gradients(
    losses: Iterable[Tensor],
    tasks: int,
    params: list[nn.Parameter],
    own: Sequence[nn.Parameter] = (),
    out: Tensor | None = None,
) -> tuple[Tensor, list[Tensor | None]]:
    """``G`` as :func:`task_gradient_matrix`, from ``tasks`` losses that ``losses`` yields one at a time, and
    the gradients of the sum of the losses with respect to ``own`` (None where no loss reads a parameter).

    Each loss is back-propagated, its graph freed, before the next one is drawn. When ``losses`` is a
    generator that runs each task's forward only when asked, one task's activations are alive at a time,
    where holding every task's graph for K backward passes keeps all K tasks' activations (on MiniLM with 7
    tasks about as much memory as G itself). The losses must not share a graph. ``own`` gets its gradients
    in the same backward as the row, so no further pass over the heads is needed."""
    G = _matrix(tasks, params, out)
    own_grads: list[Tensor | None] = [None] * len(own)
    n = 0
    for k, loss in enumerate(losses):
        if k >= tasks:
            raise ValueError(f"more than {tasks} losses")
        grads = torch.autograd.grad(loss, [*params, *own], allow_unused=True)
        _fill_row(G, k, grads[: len(params)], params)
        for i, g in enumerate(grads[len(params) :]):
            if g is not None:
                own_grads[i] = g if own_grads[i] is None else own_grads[i] + g
        del grads
        n = k + 1
    if n != tasks:
        raise ValueError(f"{n} losses for {tasks} rows")
    return G, own_grads


def _matrix(K: int, params: list[nn.Parameter], out: Tensor | None) -> Tensor:
    """``out`` when it is a float32 ``[K, P]`` buffer on the parameters' device, else a new one."""
    P = sum(p.numel() for p in params)
    device = params[0].device
    if out is not None and out.shape == (K, P) and out.dtype == torch.float32 and out.device == device:
        return out
    return torch.empty(K, P, dtype=torch.float32, device=device)


def _fill_row(G: Tensor, k: int, grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> None:
    """Row ``k`` of ``G``: the flattened ``grads`` (zeros for a parameter the loss does not read)."""
    offset = 0
    for g, p in zip(grads, params, strict=True):
        n = p.numel()
        if g is None:
            G[k, offset : offset + n].zero_()
        else:
            G[k, offset : offset + n].copy_(g.reshape(-1))
        offset += n


def write_gradient(params: list[nn.Parameter], vector: Tensor, accumulate: bool = False) -> None:
    """Unflatten ``vector`` into the parameters' ``.grad`` (the layout of ``task_gradient_matrix``).

    The gradients are views of ``vector`` (no copy) when the dtypes match: the optimizer and clipping work on
    them in place, and the caller must not reuse ``vector`` before the optimizer step."""
    offset = 0
    for p in params:
        n = p.numel()
        g = vector[offset : offset + n].view_as(p)
        if g.dtype != p.dtype or g.device != p.device:
            g = g.to(device=p.device, dtype=p.dtype)
        if accumulate and p.grad is not None:
            p.grad.add_(g)
        else:
            p.grad = g
        offset += n
    if offset != vector.numel():
        raise ValueError(f"gradient vector has {vector.numel()} entries, parameters {offset}")


#: columns of G cast to float64 at a time. On a CPU a block small enough to stay in cache (3 tasks: 768 KiB)
#: makes the cast and the product one pass over G, 6x faster than 4M-column blocks (55 against 345 ms for
#: K = 3 and MiniLM's 22.7M parameters, one thread); a GPU wants few, large blocks (32 MiB per task)
GRAMIAN_BLOCK = {"cpu": 1 << 15}
GRAMIAN_BLOCK_DEFAULT = 1 << 22


def gramian(G: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """``G @ G.T`` accumulated in float64, on G's device (the CPU for devices without float64, e.g. MPS).

    In float32 the Gramian of nearly opposed gradients (``1 + cos ~ 1e-7``) loses most of its small
    eigenvalue, and the methods' weights then differ by tens of percent from those of the exact Gramian of
    the same ``G``. The columns are cast a block at a time into one reused buffer, so no float64 copy of the
    whole ``G`` is made.
    """
    device = G.device if G.device.type not in ("mps",) else torch.device("cpu")
    K, P = G.shape
    if G.dtype == torch.float64 and G.device == device:
        return G @ G.T
    if block is None:
        block = GRAMIAN_BLOCK.get(device.type, GRAMIAN_BLOCK_DEFAULT)
    Q = torch.zeros(K, K, dtype=torch.float64, device=device)
    buf = torch.empty(K, min(block, max(P, 1)), dtype=torch.float64, device=device)
    for start in range(0, P, block):
        part = buf[:, : min(block, P - start)]
        part.copy_(G[:, start : start + block])
        Q.addmm_(part, part.T)
    return Q


def cosine_matrix(G: Tensor) -> Tensor:
    """Pairwise cosine similarity of the task gradients (the conflict matrix: < 0 means conflict), float64.

    From the float64 Gramian; the diagonal is exactly 1 (0 for a zero gradient, whose cosine with anything is
    undefined and reported as 0), and rounding never takes an entry outside [-1, 1].
    """
    Q = gramian(G)
    n = Q.diagonal().clamp(min=0.0).sqrt()
    inv = torch.where(n > 0, 1.0 / torch.where(n > 0, n, 1.0), 0.0)
    C = (Q * inv[:, None] * inv[None, :]).clamp(-1.0, 1.0)
    C.fill_diagonal_(1.0)
    return C * (n > 0)[:, None] * (n > 0)[None, :]


#: shared parameters that not every task reads: the pooler, and an encoder-decoder's shared decoder and LM
#: head (``model.decoder: shared``: generation tasks only), named as in the checkpoint (T5, BART)
NOT_EVERY_TASK = ("pooler", ".decoder.", ".lm_head.", "final_logits_bias")


def last_shared_weight(named: list[tuple[str, nn.Parameter]]) -> nn.Parameter:
    """The last weight matrix of the shared encoder that every task reads (GradNorm's 'last shared
    layer'): the pooler and a shared seq2seq decoder excluded."""
    for name, p in reversed(named):
        if p.ndim >= 2 and not any(part in name for part in NOT_EVERY_TASK):
            return p
    raise ValueError("no shared weight matrix found")
