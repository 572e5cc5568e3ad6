"""Per-task gradients on the shared parameters: what gradient-level methods and the conflict diagnostics use.

``task_gradient_matrix`` takes one task loss after another through ``torch.autograd.grad`` (the graph kept
between them) and stacks the flattened gradients of the SHARED parameters only into ``G [K, P]``; head
parameters never enter it. ``G`` lives as one matrix because every method needs all rows at once.
``G`` is float32 (memory: K copies of the shared parameters); its Gramian ``G G^T`` and the cosines are
accumulated in float64 (:func:`gramian`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def task_gradient_matrix(
    losses: list[Tensor], params: list[nn.Parameter], retain_last: bool = False
) -> Tensor:
    """``G[k] = d losses[k] / d params`` flattened (zeros where a parameter is unused by that task)."""
    rows = []
    for k, loss in enumerate(losses):
        keep = retain_last or k < len(losses) - 1
        grads = torch.autograd.grad(loss, params, retain_graph=keep, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    return torch.stack(rows)


def write_gradient(params: list[nn.Parameter], vector: Tensor, accumulate: bool = False) -> None:
    """Unflatten ``vector`` into the parameters' ``.grad`` (the layout of ``task_gradient_matrix``)."""
    offset = 0
    for p in params:
        n = p.numel()
        g = vector[offset : offset + n].view_as(p).to(p.dtype)
        if accumulate and p.grad is not None:
            p.grad.add_(g)
        else:
            p.grad = g.clone()
        offset += n
    if offset != vector.numel():
        raise ValueError(f"gradient vector has {vector.numel()} entries, parameters {offset}")


GRAMIAN_BLOCK = 1 << 22  # columns of G cast to float64 at a time (32 MiB per task)


def gramian(G: torch.Tensor, block: int = GRAMIAN_BLOCK) -> torch.Tensor:
    """``G @ G.T`` accumulated in float64, on G's device (the CPU for devices without float64, e.g. MPS).

    In float32 the Gramian of nearly opposed gradients (``1 + cos ~ 1e-7``) loses most of its small
    eigenvalue, and the methods' weights then differ by tens of percent from those of the exact Gramian of
    the same ``G``. The columns are cast a block at a time, so no float64 copy of the whole ``G`` is made.
    """
    device = G.device if G.device.type not in ("mps",) else torch.device("cpu")
    K, P = G.shape
    if G.dtype == torch.float64 and G.device == device:
        return G @ G.T
    Q = torch.zeros(K, K, dtype=torch.float64, device=device)
    for start in range(0, P, block):
        part = G[:, start : start + block].to(device=device, dtype=torch.float64)
        Q += part @ part.T
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
