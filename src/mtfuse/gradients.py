"""Per-task gradients on the shared parameters: what gradient-level methods and the conflict diagnostics use.

``task_gradient_matrix`` takes one task loss after another through ``torch.autograd.grad`` (the graph kept
between them) and stacks the flattened gradients of the SHARED parameters only into ``G [K, P]``; head
parameters never enter it. ``G`` lives as one matrix because every method needs all rows at once.
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


def cosine_matrix(G: Tensor) -> Tensor:
    """Pairwise cosine similarity of the task gradients (the conflict matrix: < 0 means conflict)."""
    n = G.norm(dim=1, keepdim=True).clamp_min(1e-12)
    U = G / n
    return U @ U.T


def last_shared_weight(named: list[tuple[str, nn.Parameter]]) -> nn.Parameter:
    """The last weight matrix of the shared encoder (GradNorm's 'last shared layer'), pooler excluded."""
    for name, p in reversed(named):
        if p.ndim >= 2 and "pooler" not in name:
            return p
    raise ValueError("no shared weight matrix found")
