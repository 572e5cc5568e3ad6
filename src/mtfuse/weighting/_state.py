"""JSON-friendly state helpers: seeded generators and a tiny Adam for the methods' own weights."""

from __future__ import annotations

import math
from typing import Any

import torch


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator: the methods draw on the CPU so a seed gives the same numbers on any device."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def generator_state(g: torch.Generator) -> list[int]:
    return [int(b) for b in g.get_state().tolist()]


def set_generator_state(g: torch.Generator, state: list[int]) -> None:
    g.set_state(torch.tensor(state, dtype=torch.uint8))


def floats(t: torch.Tensor | None) -> list[float] | None:
    return None if t is None else [float(x) for x in t.detach().cpu().reshape(-1).tolist()]


class Adam:
    """Adam on a small float64 vector, as ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient).

    Kept by hand (a few lines) so its moments are plain lists in the method's JSON state.
    """

    def __init__(self, size: int, lr: float, weight_decay: float = 0.0) -> None:
        self.lr, self.weight_decay = lr, weight_decay
        self.beta1, self.beta2, self.eps = 0.9, 0.999, 1e-8
        self.t = 0
        self.m = torch.zeros(size, dtype=torch.float64)
        self.v = torch.zeros(size, dtype=torch.float64)

    def step(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Return the updated parameter (the input is not modified)."""
        grad = grad.to(torch.float64) + self.weight_decay * param.to(torch.float64)
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        bc1 = 1 - self.beta1**self.t
        bc2 = 1 - self.beta2**self.t
        denom = self.v.sqrt() / math.sqrt(bc2) + self.eps
        return param.to(torch.float64) - (self.lr / bc1) * self.m / denom

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "m": floats(self.m), "v": floats(self.v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.m = torch.tensor(state["m"], dtype=torch.float64)
        self.v = torch.tensor(state["v"], dtype=torch.float64)
