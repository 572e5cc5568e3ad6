"""Inter-task affinity by lookahead (TAG).

Fifty, Amid, Zhao, Yu, Anil & Finn 2021, "Efficiently Identifying Task Groupings for Multi-Task Learning"
(NeurIPS), https://arxiv.org/abs/2109.04617, eq. (2)-(3). At step t, the shared parameters take one lookahead
step on task i's loss alone, ``theta_s' = theta_s - eta * update(grad L_i)``; the affinity of i onto j is the
relative drop of task j's loss on the same batch::

    Z[i -> j] = 1 - L_j(theta_s', theta_j) / L_j(theta_s, theta_j)

averaged over the steps of a run. Positive: a step for i also lowers j's loss (i helps j); negative: it
raises it. The paper writes the lookahead as an SGD step; here it is the step the run's optimizer would take
(AdamW's bias-corrected moments included), read from its state without changing it, since an SGD step of an
Adam learning rate moves the parameters almost nowhere.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def lookahead_update(
    params: list[torch.nn.Parameter], grads: list[Tensor | None], optimizer: torch.optim.Optimizer
) -> list[Tensor | None]:
    """The change ``optimizer.step()`` would make to each of ``params`` for gradients ``grads``, from the
    optimizer's current state (left untouched). AdamW (decoupled weight decay) and SGD (momentum) are
    supported; ``None`` where a parameter has no gradient."""
    where = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out: list[Tensor | None] = []
    for p, grad in zip(params, grads, strict=True):
        group = where.get(id(p))
        if grad is None or group is None:
            out.append(None)
            continue
        state = optimizer.state.get(p, {})
        lr = float(group["lr"])
        if isinstance(optimizer, torch.optim.AdamW):
            b1, b2 = group["betas"]
            step = float(state["step"]) + 1 if "step" in state else 1.0
            m = state.get("exp_avg")
            v = state.get("exp_avg_sq")
            m = (1 - b1) * grad if m is None else b1 * m + (1 - b1) * grad
            v = (1 - b2) * grad * grad if v is None else b2 * v + (1 - b2) * grad * grad
            m_hat = m / (1 - b1**step)
            denom = (v / (1 - b2**step)).sqrt() + group["eps"]
            out.append(-lr * m_hat / denom - lr * group["weight_decay"] * p)
        elif isinstance(optimizer, torch.optim.SGD):
            buf = state.get("momentum_buffer")
            mom = group.get("momentum", 0.0)
            d = grad if (buf is None or not mom) else mom * buf + grad
            out.append(-lr * d)
        else:
            raise TypeError(f"lookahead: unsupported optimizer {type(optimizer).__name__}")
    return out


def loss_affinity(before: float, after: float) -> float:
    """``1 - after / before`` (TAG eq. 3); 0 when the loss before is 0 or not finite (nothing to lower)."""
    if not math.isfinite(before) or not math.isfinite(after) or before <= 0:
        return 0.0
    return 1.0 - after / before
