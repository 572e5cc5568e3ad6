"""Gradient-level methods (``mtfuse.weighting``, ``GradientMethod``): invariants from each paper, and parity.

Every method is a pure function over the ``[K, P]`` matrix of task gradients (float64 here). Two kinds of
checks:

* invariants from the papers (PCGrad leaves non-conflicting gradients alone; MGDA returns the min-norm point
  of the convex hull; UPGrad/DualProj never conflict with a task; IMTL-G equalises projections; ...) and the
  exact result on one task (``ONE_TASK`` below);
* parity with reference implementations on the same inputs, skipped when they are not installed (test-only
  dependencies: ``torchjd==0.18.0`` with ``quadprog``/``qpsolvers`` (UPGrad, DualProj) and
  ``cvxpy``/``clarabel``/``ecos`` (CAGrad, NashMTL); ``libmtl==1.1.5``).

Parity tolerances (relative, ``||ours - ref|| / ||ref||``) and conventions, vs TorchJD 0.18:

==============  =======  ===================================================================================
method          rtol     convention
==============  =======  ===================================================================================
sum, mean       1e-12    same
pcgrad          1e-10    same order draws: our generator seeded s == torch.manual_seed(s) for TorchJD
graddrop        1e-12    same draws (U in G's dtype); TorchJD has no guard for all-zero coordinates
gradvac         1e-10    same draws and EMA, compared over 3 stateful steps
imtl            1e-10    same closed form (pinv of the Gramian)
mgda            1e-10    ``solver="frank_wolfe"`` is TorchJD's MGDA step for step; our default ``exact``
                         solver is checked against scipy and a grid instead (and is never longer than
                         TorchJD's Frank-Wolfe point, which converges sublinearly)
cagrad          1e-4     ``rescale=0`` (TorchJD does not rescale; ours defaults to the official 1/(1+c^2));
                         TorchJD solves the dual with cvxpy/CLARABEL, we with SLSQP (slightly lower objective)
nash_mtl        1e-4     same normalisation and clipping; TorchJD's CCP stops at residual 1e-3, ours is Newton
aligned_mtl     1e-10    ``reduction="mean"`` (TorchJD weights 1/K; ours default to 1 as the paper/LibMTL)
config          1e-10    same (pinv cut-off on U U^T vs U only matters for nearly dependent gradients)
fairgrad        1e-6     TorchJD: scipy least_squares; ours: Newton on the same fixed point
upgrad          1e-9     vs TorchJD with ``QuadprogProjector(reg_eps=0)``: our default exact projection;
dualproj        1e-9     vs TorchJD's defaults (``reg_eps=1e-4`` on the trace-normalised Gramian): ours with
                         ``reg_eps=1e-4``
excess_mtl      1e-10    same, over 3 stateful steps
==============  =======  ===================================================================================

Vs LibMTL 1.1.5: its weighting classes are ``nn.Module``s whose ``backward`` computes the gradients itself
(``_compute_grad``) and writes them back (``_reset_grad`` / ``_backward_new_grads``); the package's
``__init__`` imports torchvision (its ResNet models). ``libmtl_weighting`` below imports only
``LibMTL.weighting`` (under a stub parent package) and replaces those three methods so the core math runs on
our G: PCGrad (1e-10) and GradVac (1e-8: our cosines have TorchJD's eps=1e-8; first step only, since LibMTL
updates the EMA only when the correction fires) with the same task orders (its ``random.shuffle`` replaced by
our generator's permutations); IMTL (its IMTL-L loss scales at their initial 0), 1e-10; GradDrop through its
representation-gradient path (batch 1, positive inputs), 1e-12 (1e-7 with a leak: LibMTL's mask is float32);
MGDA 1e-6 for K=2, 5e-4 for K>=3 (LibMTL's iterative solver stops at 1e-5 and works in float32 there: run on G
in float32); CAGrad 2e-3 (K=3 only: LibMTL hard-codes 3 tasks; SLSQP at its default tolerance). Not compared:
LibMTL 1.1.5 has no MoCo, DB-MTL, Aligned-MTL, Nash-MTL, FairGrad, UPGrad, ConFIG, ExcessMTL.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mtfuse.errors import ConfigError
from mtfuse.weighting import WEIGHTINGS, GradientMethod
from mtfuse.weighting._state import seeded_generator
from mtfuse.weighting.aligned_mtl import aligned_mtl
from mtfuse.weighting.baselines import grad_mean, grad_sum
from mtfuse.weighting.cagrad import cagrad, cagrad_weights
from mtfuse.weighting.conflict_free import config
from mtfuse.weighting.db_mtl import db_mtl
from mtfuse.weighting.dualproj import dualproj
from mtfuse.weighting.excess_mtl import excess_mtl, excess_mtl_init
from mtfuse.weighting.fairgrad import fairgrad, fairgrad_weights
from mtfuse.weighting.graddrop import graddrop
from mtfuse.weighting.gradvac import gradvac
from mtfuse.weighting.imtl import imtl, imtl_weights
from mtfuse.weighting.mgda import mgda
from mtfuse.weighting.moco import moco
from mtfuse.weighting.nash_mtl import nash_mtl, nash_mtl_weights
from mtfuse.weighting.pcgrad import pcgrad
from mtfuse.weighting.upgrad import upgrad

F64 = torch.float64
GRADIENT_METHODS = [
    "aligned_mtl", "cagrad", "config", "db_mtl", "dualproj", "excess_mtl", "fairgrad", "graddrop", "gradvac",
    "imtl", "mean", "mgda", "moco", "nash_mtl", "pcgrad", "sum", "upgrad",
]  # fmt: skip


def grads(K: int, P: int = 12, seed: int = 0, conflict: bool = True) -> torch.Tensor:
    """Random ``[K, P]`` gradients (linearly independent a.s.); task 0 made to conflict with task 1."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(K, P, generator=g, dtype=F64)
    if conflict and K > 1:
        G[0] -= 1.5 * G[1]
    return G


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def build(name: str, tasks: list[str], **params: Any) -> GradientMethod:
    cls = WEIGHTINGS.get(name)
    p = cls.Params.model_validate(params) if cls.Params is not None else None
    method = cls(tasks, p, dict.fromkeys(tasks, 1.0))
    assert isinstance(method, GradientMethod)
    return method


# ------------------------------------------------------------------------------------------ interface


def test_every_gradient_method_is_registered_and_refuses_combine() -> None:
    registered = [n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).is_gradient_method]
    assert registered == GRADIENT_METHODS
    for name in GRADIENT_METHODS:
        m = build(name, ["a", "b"])
        assert m.weights() == {}
        with pytest.raises(ConfigError, match="step mode 'joint'"):
            m.combine({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, 0)
        with pytest.raises(ValueError, match="num_tasks=2"):
            m.aggregate(torch.zeros(3, 4, dtype=F64), torch.ones(3, dtype=F64), 0)
    assert not WEIGHTINGS.get("static").is_gradient_method


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_aggregate_matches_last_weights(name: str) -> None:
    """``aggregate`` returns ``[P]``; for a weighting of G, ``last_weights @ G`` is that result."""
    tasks = ["a", "b", "c"]
    m = build(name, tasks)
    G, L = grads(3, seed=1), torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    for step in range(2):
        d = m.aggregate(G + 0.1 * step, L, step)
        assert d.shape == (G.shape[1],) and d.dtype == F64 and torch.isfinite(d).all()
    w = m.last_weights
    if name in ("graddrop", "db_mtl"):
        assert w is None and m.weights() == {}
    elif name == "moco":  # weights of the tracked gradients, on the simplex
        assert w is not None and math.isclose(sum(w.values()), 1.0) and min(w.values()) >= 0
    else:
        assert w is not None and list(w) == tasks
        wt = torch.tensor([w[t] for t in tasks], dtype=F64)
        torch.testing.assert_close(wt @ (G + 0.1), d, rtol=1e-10, atol=1e-12)


# One task: the exact expected update for gradient g (norm > 1), loss L, with each method's defaults.
ONE_TASK: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "sum": lambda g, L: g,
    "mean": lambda g, L: g,
    "pcgrad": lambda g, L: g,
    "graddrop": lambda g, L: g,  # purity 1 where g > 0 and 0 where g < 0: every coordinate passes
    "gradvac": lambda g, L: g,
    "imtl": lambda g, L: g,
    "mgda": lambda g, L: g,
    "upgrad": lambda g, L: g,
    "dualproj": lambda g, L: g,
    "config": lambda g, L: g,
    "aligned_mtl": lambda g, L: g,
    "excess_mtl": lambda g, L: g,
    "cagrad": lambda g, L: (1 + 0.4) / (1 + 0.4**2) * g,  # g_0 + c ||g_0|| g/||g||, over 1 + c^2 (c = 0.4)
    "nash_mtl": lambda g, L: g / g.norm(),  # alpha = 1 on the normalised Gramian, clipped to max_norm = 1
    "fairgrad": lambda g, L: g / g.norm(),  # ||g||^2 w = 1/w: w = 1/||g|| (alpha = 1)
    "moco": lambda g, L: 0.5 * g,  # Y = beta_1 g after one call from Y = 0 (beta = 0.5)
    # EMA from 0 of grad log L (beta = 0.9), times max_norm / (norm + eps) = n / (n + 1e-8)
    "db_mtl": lambda g, L: (n := (0.1 * g / (L + 1e-8)).norm()) / (n + 1e-8) * 0.1 * g / (L + 1e-8),
}


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_one_task(name: str) -> None:
    g = torch.tensor([[3.0, -1.0, 0.5, -2.0, 1.5]], dtype=F64)
    L = 0.7
    d = build(name, ["only"]).aggregate(g, torch.tensor([L], dtype=F64), 0)
    torch.testing.assert_close(d, ONE_TASK[name](g[0], L), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------ invariants


def test_sum_and_mean() -> None:
    G = grads(4)
    torch.testing.assert_close(grad_sum(G), G[0] + G[1] + G[2] + G[3])
    torch.testing.assert_close(grad_mean(G), (G[0] + G[1] + G[2] + G[3]) / 4)


def test_pcgrad_leaves_non_conflicting_gradients_unchanged() -> None:
    G = grads(4, conflict=False).abs()  # non-negative entries: every inner product >= 0
    torch.testing.assert_close(pcgrad(G, seeded_generator(0)), G.sum(0))


def test_pcgrad_projects_conflicting_gradients_as_the_paper() -> None:
    G = grads(2)
    g1, g2 = G
    assert g1 @ g2 < 0
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    torch.testing.assert_close(pcgrad(G, seeded_generator(0)), p1 + p2)
    assert abs(float(p1 @ g2)) < 1e-12  # the projected gradient is orthogonal to the one it conflicted with
    # K = 3, one fixed order per task: the projections follow Algorithm 1 sequentially
    G = grads(3, seed=4)
    gen, ref = seeded_generator(9), torch.zeros(G.shape[1], dtype=F64)
    orders = [torch.randperm(3, generator=gen).tolist() for _ in range(3)]
    for i, order in enumerate(orders):
        gi = G[i].clone()
        for j in order:
            if j != i and gi @ G[j] < 0:
                gi -= (gi @ G[j]) / (G[j] @ G[j]) * G[j]
        ref += gi
    torch.testing.assert_close(pcgrad(G, seeded_generator(9)), ref)


@pytest.mark.parametrize("K", [2, 3])
def test_mgda_of_identical_gradients_is_that_gradient(K: int) -> None:
    g = grads(1, seed=3)[0]
    G = g.repeat(K, 1)
    torch.testing.assert_close(mgda(G), g)
    torch.testing.assert_close(mgda(G, solver="frank_wolfe"), g)


def _min_norm_scipy(G: torch.Tensor) -> torch.Tensor:
    Q = (G @ G.T).numpy()
    K = len(Q)
    res = minimize(lambda w: w @ Q @ w, np.full(K, 1 / K), jac=lambda w: 2 * Q @ w, method="SLSQP",
                   bounds=[(0, 1)] * K, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                   options={"ftol": 1e-16, "maxiter": 1000})  # fmt: skip
    return torch.from_numpy(res.x) @ G


@pytest.mark.parametrize(("K", "seed"), [(2, 0), (2, 1), (3, 0), (3, 2), (3, 5)])
def test_mgda_is_the_min_norm_point_of_the_convex_hull(K: int, seed: int) -> None:
    G = grads(K, P=6, seed=seed)
    d = mgda(G)
    # optimality (the min-norm point d of conv{g_i} satisfies g_i . d >= ||d||^2 for every i)
    assert (G @ d >= d @ d - 1e-10).all()
    ref = _min_norm_scipy(G)
    assert float(d.norm()) <= float(ref.norm()) + 1e-9
    torch.testing.assert_close(d, ref, rtol=1e-5, atol=1e-6)
    if K == 2:  # brute-force grid on the segment
        t = torch.linspace(0, 1, 20001, dtype=F64)[:, None]
        best = (t * G[0] + (1 - t) * G[1]).norm(dim=1).min()
        assert float(best) - 1e-4 <= float(d.norm()) <= float(best) + 1e-12
    else:  # brute-force grid on the simplex (step 1/200)
        n = 200
        ws = torch.tensor([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)], dtype=F64) / n
        best = (ws @ G).norm(dim=1).min()
        assert float(best) - 1e-2 <= float(d.norm()) <= float(best) + 1e-12
    # Frank-Wolfe (the paper's Algorithm 2) only approximates it, from above
    assert float(mgda(G, solver="frank_wolfe").norm()) >= float(d.norm()) - 1e-12


def test_mgda_normalisation_divides_the_gradients() -> None:
    G, L = grads(3, seed=2), torch.tensor([0.5, 2.0, 1.5], dtype=F64)
    n = G.norm(dim=1)
    torch.testing.assert_close(mgda(G, L, "l2"), mgda(G / n[:, None]))
    torch.testing.assert_close(mgda(G, L, "loss"), mgda(G / L[:, None]))
    torch.testing.assert_close(mgda(G, L, "loss+"), mgda(G / (L * n)[:, None]))


@pytest.mark.parametrize("method", [upgrad, dualproj])
@pytest.mark.parametrize(("K", "seed"), [(2, 0), (3, 1), (4, 2), (5, 3), (5, 4)])
def test_upgrad_and_dualproj_never_conflict(method: Callable[..., torch.Tensor], K: int, seed: int) -> None:
    G = grads(K, seed=seed)
    G[2 % K] -= 2.0 * G[(3 % K)] if K > 3 else 0.0  # more conflicts
    d = method(G)
    scale = float(G.norm(dim=1).max() * d.norm())
    assert (G @ d >= -1e-9 * scale).all()
    assert float(d.norm()) > 0


@pytest.mark.parametrize("method", [upgrad, dualproj])
def test_upgrad_and_dualproj_keep_the_mean_without_conflict(method: Callable[..., torch.Tensor]) -> None:
    G = grads(4, conflict=False).abs()  # each g_i is already in the dual cone
    torch.testing.assert_close(method(G), G.mean(0))


def test_upgrad_is_the_mean_of_the_projections() -> None:
    """Each projected row is in the dual cone, and nothing closer to g_i is (checked against scipy)."""
    G = grads(3, P=5, seed=6)
    Q = (G @ G.T).numpy()
    proj = []
    for i in range(3):
        e = np.eye(3)[i]
        bounds = [(e[k], None) for k in range(3)]
        opts = {"ftol": 1e-16, "maxiter": 1000}
        res = minimize(lambda v: v @ Q @ v, e + 1, jac=lambda v: 2 * Q @ v, bounds=bounds, options=opts)
        proj.append(torch.from_numpy(res.x) @ G)
    torch.testing.assert_close(upgrad(G), torch.stack(proj).mean(0), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("K", [2, 3, 5])
def test_imtl_gives_equal_projections_on_every_unit_gradient(K: int) -> None:
    G = grads(K, seed=K)
    d = imtl(G)
    proj = G @ d / G.norm(dim=1)
    torch.testing.assert_close(proj, proj.mean().expand(K), rtol=1e-9, atol=1e-12)
    assert math.isclose(float(imtl_weights(G @ G.T).sum()), 1.0)


def test_cagrad() -> None:
    G = grads(4, seed=7)
    g0 = G.mean(0)
    torch.testing.assert_close(cagrad(G, c=0.0), g0)
    for c in (0.2, 0.5, 1.0):
        d = cagrad(G, c=c, rescale=0)
        # d solves max_{||d - g0|| <= c ||g0||} min_i g_i . d: it is in the ball and beats g0 (feasible)
        assert float((d - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-6)
        assert float((G @ d).min()) >= float((G @ g0).min()) - 1e-9
        torch.testing.assert_close(cagrad(G, c=c, rescale=1), d / (1 + c**2))
        torch.testing.assert_close(cagrad(G, c=c, rescale=2), d / (1 + c))


def _cagrad_primal(G: torch.Tensor, c: float) -> float:
    """The paper's objective solved directly over d in R^P: max_{||d - g0|| <= c ||g0||} min_i g_i . d
    (the value of a feasible point: a lower bound of the optimum, up to SLSQP's tolerance)."""
    Gn, g0 = G.numpy(), G.mean(0).numpy()
    K, P = Gn.shape
    phi = (c * np.linalg.norm(g0)) ** 2
    best = -np.inf
    for x0 in (np.r_[g0, (Gn @ g0).min()], np.r_[g0 + 0.1 * c * np.linalg.norm(g0), -1.0]):
        res = minimize(
            lambda x: (-x[P], np.r_[np.zeros(P), -1.0]),
            x0,
            jac=True,
            method="SLSQP",
            constraints=[
                {"type": "ineq", "fun": lambda x: Gn @ x[:P] - x[P],
                 "jac": lambda x: np.hstack([Gn, -np.ones((K, 1))])},
                {"type": "ineq", "fun": lambda x: np.array([phi - (x[:P] - g0) @ (x[:P] - g0)]),
                 "jac": lambda x: np.r_[-2 * (x[:P] - g0), 0.0][None]},
            ],
            options={"ftol": 1e-15, "maxiter": 2000},
        )  # fmt: skip
        d = res.x[:P] - g0  # SLSQP may leave the ball by its tolerance: pull d back in
        d = g0 + d * min(1.0, float(np.sqrt(phi) / max(np.linalg.norm(d), 1e-300)))
        best = max(best, float((Gn @ d).min()))
    return best


def _near_hull(K: int, P: int, eps: float, seed: int) -> torch.Tensor:
    """Gradients with 0 (eps = 0) or nearly 0 in their convex hull: Pareto-stationary or nearly so."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((K, P))
    w = rng.random(K) + 0.1
    G[-1] = -(w[:-1] @ G[:-1]) / w[-1] + eps * rng.standard_normal(P)
    return torch.from_numpy(G)


def test_cagrad_when_the_optimal_combination_vanishes() -> None:
    """Issue 8: g_w* = 0 (0 in the convex hull) used to give the mean, whose worst task is -1/6 here; the
    paper's objective has a better solution (worst task 0: d = (0, 1/3, 0) is in the ball)."""
    G = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.5, 1.0, 0.0]], dtype=F64)
    g0 = G.mean(0)
    assert float((G @ g0).min()) == pytest.approx(-1 / 6)
    d = cagrad(G, c=0.5, rescale=0)
    assert float((G @ d).min()) >= -1e-9
    assert float((d - g0).norm()) <= 0.5 * float(g0.norm()) * (1 + 1e-9)
    # of the maximisers (every d in the ball with G d >= 0), the one closest to g0
    torch.testing.assert_close(d, torch.tensor([0.0, 1 / 3, 0.0], dtype=F64), rtol=0, atol=1e-9)
    torch.testing.assert_close(cagrad(G, c=0.5), d / 1.25)  # rescale=1: over 1 + c^2


@pytest.mark.parametrize("eps", [1e-4, 1e-6, 1e-8, 1e-10, 1e-12])
@pytest.mark.parametrize("entry", [(1, 1), (1, 0), (0, 1)])
def test_cagrad_near_a_vanishing_combination(eps: float, entry: tuple[int, int]) -> None:
    """Perturbations of the case above: the weights reached 4e10 there and the worst task -0.42."""
    G = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.5, 1.0, 0.0]], dtype=F64)
    G[entry] += eps
    w = cagrad_weights(G @ G.T, 0.5, 0)
    d = w @ G
    assert float(w.abs().max()) < 1.0
    assert float((G @ d).min()) >= -1e-11
    assert float((d - G.mean(0)).norm()) <= 0.5 * float(G.mean(0).norm()) * (1 + 1e-9)


@pytest.mark.parametrize("eps", [0.0, 1e-12, 1e-9, 1e-6, 1e-3, 1e-1])
@pytest.mark.parametrize(("K", "seed"), [(2, 0), (3, 1), (4, 2), (5, 3)])
def test_cagrad_solves_the_papers_objective(eps: float, K: int, seed: int) -> None:
    """On (nearly) Pareto-stationary gradients the update attains the optimum of the primal objective, stays
    in the ball, and its weights stay moderate (they reached 1e10 near g_w* = 0)."""
    G = _near_hull(K, 6, eps, seed)
    g0 = G.mean(0)
    for c in (0.2, 0.5, 1.0):
        d = cagrad(G, c=c, rescale=0)
        radius = c * float(g0.norm())
        scale = float(G.norm(dim=1).max()) * radius
        assert float((d - g0).norm()) <= radius * (1 + 1e-6)
        # exactly Pareto-stationary: the optimum to the solvers' precision; nearly: the objective is almost
        # flat along the direction that separates the tasks, and the weights are kept moderate instead
        tol = 1e-10 if eps == 0 else 1e-6
        assert float((G @ d).min()) >= _cagrad_primal(G, c) - tol * scale
        assert float(cagrad_weights(G @ G.T, c, 0).abs().max()) < 1e4


@pytest.mark.parametrize("K", [2, 3, 5])
def test_config_has_equal_cosines(K: int) -> None:
    G = grads(K, seed=10 + K)
    d = config(G)
    cos = G @ d / (G.norm(dim=1) * d.norm())
    torch.testing.assert_close(cos, cos.mean().expand(K), rtol=1e-9, atol=1e-12)
    assert (cos > 0).all()
    torch.testing.assert_close((G @ d).sum() / d.norm(), d.norm())  # length = sum_i g_i . d_hat


def _orthogonal(K: int, P: int, norms: list[float]) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(P, K, generator=torch.Generator().manual_seed(0), dtype=F64))
    return q.T * torch.tensor(norms, dtype=F64)[:, None]


def test_aligned_mtl() -> None:
    G = _orthogonal(3, 8, [2.0, 2.0, 2.0])  # already aligned: left unchanged
    torch.testing.assert_close(aligned_mtl(G), G.sum(0))
    torch.testing.assert_close(aligned_mtl(G, reduction="mean"), G.mean(0))
    # orthogonal, different norms: every row rescaled to the smallest singular value
    G = _orthogonal(3, 8, [1.0, 2.0, 3.0])
    torch.testing.assert_close(aligned_mtl(G), (G / G.norm(dim=1, keepdim=True)).sum(0))
    torch.testing.assert_close(
        aligned_mtl(G, scale_mode="median"), 2.0 * (G / G.norm(dim=1, keepdim=True)).sum(0)
    )
    # general G: B G has orthogonal rows of norm sigma_min, so the update has equal inner products with them
    G = grads(3, seed=3)
    smin = torch.linalg.svdvals(G).min()
    d = aligned_mtl(G)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    G_hat = smin * U @ Vh
    torch.testing.assert_close(d, G_hat.sum(0))


def test_nash_mtl_solves_the_bargaining_condition() -> None:
    G = grads(4, seed=8)
    Q = G @ G.T
    Qn = Q / torch.linalg.matrix_norm(Q)
    alpha = nash_mtl_weights(Q, max_norm=0.0)
    torch.testing.assert_close(Qn @ alpha * alpha, torch.ones(4, dtype=F64), rtol=1e-9, atol=1e-9)
    assert (alpha > 0).all()
    d = nash_mtl(G, max_norm=0.5)
    assert math.isclose(float(d.norm()), 0.5) and torch.allclose(d / d.norm(), alpha @ G / (alpha @ G).norm())


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
def test_fairgrad_solves_the_alpha_fair_condition(alpha: float) -> None:
    G = 0.01 * grads(3, seed=9)  # small gradients: the solve is scale-normalised
    Q = G @ G.T
    w = fairgrad_weights(Q, alpha)
    torch.testing.assert_close(Q @ w, w ** (-1 / alpha), rtol=1e-9, atol=0.0)
    if alpha == 1.0:  # proportional fairness is Nash-MTL's condition (up to its normalisation)
        d, n = fairgrad(G, 1.0), nash_mtl(G, max_norm=0.0)
        torch.testing.assert_close(d / d.norm(), n / n.norm())
    torch.testing.assert_close(fairgrad(G, 0.0), G.mean(0))


def test_graddrop() -> None:
    G = grads(4, seed=2)
    torch.testing.assert_close(graddrop(G, 1.0, seeded_generator(0)), G.sum(0))  # full leak: the sum
    same_sign = G.abs() * torch.sign(torch.randn(G.shape[1], generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(
        graddrop(same_sign.to(F64), 0.0, seeded_generator(0)), same_sign.sum(0).to(F64)
    )
    # leak 0: each coordinate keeps only one sign: all the positive or all the negative parts
    d = graddrop(G, 0.0, seeded_generator(3))
    pos, neg = G.clamp(min=0).sum(0), G.clamp(max=0).sum(0)
    assert torch.all(torch.isclose(d, pos) | torch.isclose(d, neg))


def test_graddrop_by_column_blocks_is_the_whole_matrix_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """GradDrop runs over blocks of columns (no [K, P] temporaries): any block size gives the same update."""
    import mtfuse.weighting._linalg as la

    G = grads(3, P=1000, seed=4)
    G[:, 10:20] = 0.0  # coordinates where every task gradient is zero
    whole = graddrop(G, 0.2, seeded_generator(5))
    monkeypatch.setattr(la, "COLUMN_BLOCK", 7)
    torch.testing.assert_close(graddrop(G, 0.2, seeded_generator(5)), whole, rtol=0, atol=0)
    # and the per-coordinate rule, written out for the whole matrix
    U = torch.rand(G.shape[1], generator=seeded_generator(5), dtype=G.dtype)
    total, mass = G.sum(0), G.abs().sum(0)
    purity = torch.where(mass > 0, 0.5 * (1 + total / torch.where(mass > 0, mass, 1.0)), 0.5)
    keep = ((purity > U) & (G > 0)) | ((purity < U) & (G < 0))
    torch.testing.assert_close(whole, ((0.2 + 0.8 * keep) * G).sum(0))


def test_stateful_methods_update_their_state_in_place_as_their_pure_step() -> None:
    """MoCo, DB-MTL and ExcessMTL keep a [K, P] state; ``out=state`` updates it in place with the pure result."""
    G, L = grads(3, seed=6), torch.tensor([0.5, 2.0, 1.0], dtype=F64)
    y, lam = grads(3, seed=7), torch.full((3,), 1 / 3, dtype=F64)
    d, y_new, _ = moco(G, y.clone(), lam, 2, rho=0.1)
    y_in = y.clone()
    d_in, y_out, _ = moco(G, y_in, lam, 2, rho=0.1, out=y_in)
    assert y_out.data_ptr() == y_in.data_ptr()
    torch.testing.assert_close(y_out, y_new)
    torch.testing.assert_close(d_in, d)
    torch.testing.assert_close(y_new, y - 0.5 / math.sqrt(2) * (y - G))  # the paper's update, written out

    buf = grads(3, seed=8)
    d, new = db_mtl(G, L, buf.clone(), 3, beta=0.9, beta_sigma=0.5)
    b_in = buf.clone()
    d_in, b_out = db_mtl(G, L, b_in, 3, beta=0.9, beta_sigma=0.5, out=b_in)
    assert b_out.data_ptr() == b_in.data_ptr()
    torch.testing.assert_close(b_out, new)
    torch.testing.assert_close(d_in, d)

    s0 = excess_mtl_init(G)
    _, s1 = excess_mtl(G, s0)
    d2, s2 = excess_mtl(2 * G, s1)
    kept = s1.sq_grad_sum.clone()
    d2_in, s2_in = excess_mtl(2 * G, s1._replace(sq_grad_sum=kept), out=kept)
    assert s2_in.sq_grad_sum.data_ptr() == kept.data_ptr()
    torch.testing.assert_close(s2_in.sq_grad_sum, s2.sq_grad_sum)
    torch.testing.assert_close(s2_in.sq_grad_sum, 5 * G**2)
    torch.testing.assert_close(d2_in, d2)
    torch.testing.assert_close(s2_in.weights, s2.weights)


def test_gradvac_first_step_is_pcgrad_and_tracks_the_cosines() -> None:
    G = grads(2, seed=5)
    d, phi = gradvac(G, torch.zeros(2, 2, dtype=F64), beta=0.5, generator=seeded_generator(0))
    torch.testing.assert_close(d, pcgrad(G, seeded_generator(0)), rtol=1e-7, atol=1e-9)
    cos = float(G[0] @ G[1] / (G[0].norm() * G[1].norm()))
    torch.testing.assert_close(phi, torch.tensor([[0.0, 0.5 * cos], [0.5 * cos, 0.0]], dtype=F64))
    # a pair below its target cosine is corrected to exactly that cosine (task 0 vs 1: target 0.99; task 1
    # vs 0: target -1, never below it, so g_1 is unchanged)
    target = torch.tensor([[0.0, 0.99], [-1.0, 0.0]], dtype=F64)
    d, _ = gradvac(G, target, beta=0.5, eps=0.0, generator=seeded_generator(0))
    g0_pc = d - G[1]
    assert abs(float(g0_pc @ G[1] / (g0_pc.norm() * G[1].norm())) - 0.99) < 1e-9


def test_moco_one_step_by_hand() -> None:
    G = grads(3, seed=1)
    y0 = torch.zeros_like(G)
    lam0 = torch.full((3,), 1 / 3, dtype=F64)
    d, y, lam = moco(G, y0, lam0, 1, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.1)
    torch.testing.assert_close(y, 0.5 * G)
    v = (lam0 - 0.1 * ((y @ y.T) @ lam0 + 0.1 * lam0)).numpy()
    # projection onto the simplex of v: the closest point, checked against scipy
    cons = [{"type": "eq", "fun": lambda w: w.sum() - 1}]
    res = minimize(lambda w: ((w - v) ** 2).sum(), np.full(3, 1 / 3), method="SLSQP", bounds=[(0, 1)] * 3,
                   constraints=cons, options={"ftol": 1e-16})  # fmt: skip
    torch.testing.assert_close(lam, torch.from_numpy(res.x), atol=1e-7, rtol=0)
    torch.testing.assert_close(d, lam @ y)
    # the second call uses beta / sqrt(2) and tracks G
    _, y2, _ = moco(G, y, lam, 2, beta=0.5)
    torch.testing.assert_close(y2, y - 0.5 / math.sqrt(2) * (y - G))


def test_db_mtl_by_hand() -> None:
    G, L = grads(3, seed=2), torch.tensor([0.5, 2.0, 1.0], dtype=F64)
    d, buf = db_mtl(G, L, torch.zeros_like(G), 1, beta=0.9)
    m = 0.1 * G / (L + 1e-8)[:, None]
    torch.testing.assert_close(buf, m)
    n = m.norm(dim=1)
    torch.testing.assert_close(d, ((n.max() / (n + 1e-8))[:, None] * m).sum(0))
    d2, buf2 = db_mtl(G, L, buf, 2, beta=0.9)
    torch.testing.assert_close(buf2, G / (L + 1e-8)[:, None] + 0.9 * (buf - G / (L + 1e-8)[:, None]))


def test_excess_mtl_by_hand() -> None:
    G = grads(2, seed=3)
    d1, s1 = excess_mtl(G, excess_mtl_init(G), robust_step_size=1.0)
    e1 = (G**2 / torch.sqrt(G**2 + 1e-7)).sum(1)
    w1 = torch.softmax(torch.log(torch.full((2,), 0.5, dtype=F64)) + e1, 0)
    torch.testing.assert_close(s1.weights, w1)
    torch.testing.assert_close(d1, w1 @ G)
    d2, s2 = excess_mtl(2 * G, s1, robust_step_size=1.0)
    e2 = (4 * G**2 / torch.sqrt(5 * G**2 + 1e-7)).sum(1) / (e1 + 1e-7)
    torch.testing.assert_close(s2.weights, torch.softmax(torch.log(w1) + e2, 0))


def test_random_methods_are_seeded() -> None:
    G = grads(4, seed=0)
    for name in ("pcgrad", "graddrop", "gradvac"):
        a, b, c = (
            build(name, list("wxyz"), seed=1),
            build(name, list("wxyz"), seed=1),
            build(name, list("wxyz"), seed=2),
        )
        ra = [a.aggregate(G, torch.ones(4, dtype=F64), s) for s in range(3)]
        rb = [b.aggregate(G, torch.ones(4, dtype=F64), s) for s in range(3)]
        rc = [c.aggregate(G, torch.ones(4, dtype=F64), s) for s in range(3)]
        assert all(torch.equal(x, y) for x, y in zip(ra, rb, strict=True))
        assert not all(torch.equal(x, y) for x, y in zip(ra, rc, strict=True))


def test_nash_mtl_reuses_weights_between_updates() -> None:
    m = build("nash_mtl", ["a", "b", "c"], update_weights_every=2, max_norm=0.0)
    G, L = grads(3, seed=1), torch.ones(3, dtype=F64)
    m.aggregate(G, L, 0)
    w0 = m.last_weights
    m.aggregate(2 * G, L, 1)
    assert m.last_weights == w0
    m.aggregate(G.flip(1) + 1.0, L, 2)
    assert m.last_weights != w0


# ------------------------------------------------------------------------------------------ TorchJD parity


@pytest.fixture(scope="module")
def tj() -> Any:
    pytest.importorskip("torchjd")
    from importlib.metadata import version

    if tuple(int(x) for x in version("torchjd").split(".")[:2]) < (0, 18):
        pytest.skip("parity is checked against torchjd 0.18")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("torchjd.aggregation")


PARITY_INPUTS = [(2, 0), (3, 1), (5, 2)]


@pytest.mark.parametrize(("K", "seed"), PARITY_INPUTS)
def test_torchjd_stateless(tj: Any, K: int, seed: int) -> None:
    G = grads(K, seed=seed)
    cases: list[tuple[str, torch.Tensor, Callable[[], torch.Tensor], float]] = [
        ("sum", grad_sum(G), lambda: tj.Sum()(G), 1e-12),
        ("mean", grad_mean(G), lambda: tj.Mean()(G), 1e-12),
        ("imtl", imtl(G), lambda: tj.IMTLG()(G), 1e-10),
        ("mgda fw", mgda(G, solver="frank_wolfe"), lambda: tj.MGDA()(G), 1e-10),
        ("aligned", aligned_mtl(G, reduction="mean"), lambda: tj.AlignedMTL()(G), 1e-10),
        ("config", config(G), lambda: tj.ConFIG()(G), 1e-10),
    ]
    for name, ours, ref, tol in cases:
        assert rel(ours, ref()) <= tol, name
    # our exact min-norm point is never longer than TorchJD's Frank-Wolfe approximation of it
    assert float(mgda(G).norm()) <= float(tj.MGDA()(G).norm()) + 1e-12


@pytest.mark.parametrize(("K", "seed"), PARITY_INPUTS)
def test_torchjd_fairgrad(tj: Any, K: int, seed: int) -> None:
    G = grads(K, seed=seed)
    for alpha in (1.0, 2.0):
        assert rel(fairgrad(G, alpha), tj.FairGrad(alpha=alpha)(G)) <= 1e-6


@pytest.mark.parametrize(("K", "seed"), PARITY_INPUTS)
def test_torchjd_upgrad_dualproj(tj: Any, K: int, seed: int) -> None:
    pytest.importorskip("quadprog")
    pytest.importorskip("qpsolvers")
    from torchjd._linalg import QuadprogProjector  # the projector's class (public as torchjd.linalg in docs)

    G = grads(K, seed=seed)
    exact = QuadprogProjector(reg_eps=0.0)
    assert rel(upgrad(G), tj.UPGrad(projector=exact)(G)) <= 1e-9
    assert rel(dualproj(G), tj.DualProj(projector=exact)(G)) <= 1e-9
    assert rel(upgrad(G, reg_eps=1e-4), tj.UPGrad()(G)) <= 1e-9
    assert rel(dualproj(G, reg_eps=1e-4), tj.DualProj()(G)) <= 1e-9


@pytest.mark.parametrize(("K", "seed"), PARITY_INPUTS)
def test_torchjd_cvxpy_methods(tj: Any, K: int, seed: int) -> None:
    pytest.importorskip("cvxpy")
    pytest.importorskip("clarabel")
    pytest.importorskip("ecos")
    G = grads(K, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "not DPP"
        assert rel(cagrad(G, c=0.5, rescale=0), tj.CAGrad(c=0.5)(G)) <= 1e-4
        ref = tj.NashMTL(n_tasks=K)
        ours = build("nash_mtl", [str(i) for i in range(K)])
        for step in range(2):
            Gs = G * (1 + step)
            assert rel(ours.aggregate(Gs, torch.ones(K, dtype=F64), step), ref(Gs)) <= 1e-4


@pytest.mark.parametrize(("K", "seed"), PARITY_INPUTS)
def test_torchjd_random_and_stateful(tj: Any, K: int, seed: int) -> None:
    G = grads(K, seed=seed)
    steps = [G, G.flip(1), 0.5 * G + 0.1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        assert rel(pcgrad(G, seeded_generator(11)), tj.PCGrad()(G)) <= 1e-10
        torch.manual_seed(12)
        assert rel(graddrop(G, 0.0, seeded_generator(12)), tj.GradDrop()(G)) <= 1e-12
        torch.manual_seed(13)
        ref, gen, phi = tj.GradVac(beta=0.5), seeded_generator(13), torch.zeros(K, K, dtype=F64)
        for Gs in steps:
            d, phi = gradvac(Gs, phi, 0.5, 1e-8, gen)
            assert rel(d, ref(Gs)) <= 1e-10
    ref, state = tj.ExcessMTL(robust_step_size=0.5), excess_mtl_init(G)
    for Gs in steps:
        d, state = excess_mtl(Gs, state, robust_step_size=0.5)
        assert rel(d, ref(Gs)) <= 1e-10
    ref, state = tj.ExcessMTL(n_warmup_steps=1), excess_mtl_init(G)
    for Gs in steps:
        d, state = excess_mtl(Gs, state, n_warmup_steps=1)
        assert rel(d, ref(Gs)) <= 1e-10


# ------------------------------------------------------------------------------------------ LibMTL parity


def libmtl_weighting(
    cls: type, G: torch.Tensor, losses: torch.Tensor | None = None, **kw: Any
) -> torch.Tensor:
    """Run a LibMTL weighting's ``backward`` on our G: its gradient computation and write-back replaced."""
    obj, out = cls(), {}
    K = G.shape[0]
    obj.task_num, obj.device, obj.rep_grad = K, torch.device("cpu"), False
    obj._compute_grad_dim = lambda: None
    obj._compute_grad = lambda losses, mode, rep_grad=False: G.clone()
    obj._get_grads = lambda losses, mode="backward": G.clone()
    obj._reset_grad = lambda new: out.__setitem__("d", new)
    obj._backward_new_grads = lambda w, per_grads=None, grads=None: out.__setitem__(
        "d", torch.as_tensor(w).to(grads) @ grads
    )
    obj.init_param()
    obj.backward(torch.ones(K, dtype=G.dtype) if losses is None else losses, **kw)
    return out["d"]


def _shuffle_with(gen: torch.Generator) -> Callable[[list[int]], None]:
    def shuffle(lst: list[int]) -> None:
        lst[:] = [lst[k] for k in torch.randperm(len(lst), generator=gen).tolist()]

    return shuffle


@pytest.mark.parametrize("K", [2, 3, 4])
def test_libmtl_pcgrad_gradvac_imtl(libmtl: Any, monkeypatch: pytest.MonkeyPatch, K: int) -> None:
    G = grads(K, seed=K)
    monkeypatch.setattr(random, "shuffle", _shuffle_with(seeded_generator(5)))  # LibMTL's task orders
    assert rel(pcgrad(G, seeded_generator(5)), libmtl_weighting(libmtl.PCGrad, G)) <= 1e-10
    monkeypatch.setattr(random, "shuffle", _shuffle_with(seeded_generator(6)))
    d, _ = gradvac(G, torch.zeros(K, K, dtype=F64), 0.5, 1e-8, seeded_generator(6))
    assert rel(d, libmtl_weighting(libmtl.GradVac, G, beta=0.5)) <= 1e-8  # our eps=1e-8 in the cosines
    assert rel(imtl(G), libmtl_weighting(libmtl.IMTL, G)) <= 1e-10


@pytest.mark.parametrize("K", [2, 3, 4])
def test_libmtl_mgda(libmtl: Any, K: int) -> None:
    G, L = grads(K, seed=K), torch.linspace(0.5, 2.0, K, dtype=F64)
    for norm in ("none", "l2", "loss", "loss+"):
        if K == 2:
            ref = libmtl_weighting(libmtl.MGDA, G, L, mgda_gn=norm)
            assert rel(mgda(G, L, norm), ref) <= 1e-6, norm
        else:  # LibMTL's solver keeps its weights in float32 here
            ref = libmtl_weighting(libmtl.MGDA, G.float(), L.float(), mgda_gn=norm).double()
            assert rel(mgda(G, L, norm), ref) <= 5e-4, norm


def test_libmtl_cagrad(libmtl: Any) -> None:
    G = grads(3, seed=3)
    for c in (0.2, 0.5):
        assert rel(cagrad(G, c, rescale=1), libmtl_weighting(libmtl.CAGrad, G, calpha=c, rescale=1)) <= 2e-3


def test_libmtl_graddrop(libmtl: Any) -> None:
    """LibMTL's GradDrop runs on representation gradients: batch 1, positive inputs, so its G is ours."""
    G = grads(4, seed=1)
    obj = libmtl.GradDrop()
    obj.task_num, obj.device, obj.rep_grad = 4, torch.device("cpu"), True
    obj.rep = torch.ones(1, G.shape[1], dtype=F64, requires_grad=True)
    obj._compute_grad = lambda losses, mode, rep_grad=False: G[:, None, :].clone()
    for leak in (0.0, 0.3):
        obj.rep.grad = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(21)
            obj.backward(torch.ones(4), leak=leak)
        tol = 1e-12 if leak == 0 else 1e-7  # LibMTL builds the leak mask in float32
        assert rel(graddrop(G, leak, seeded_generator(21)), obj.rep.grad[0]) <= tol


def test_pcgrad_order_matters_for_three_tasks() -> None:
    """Different seeds give different PCGrad results for K=3 (the same-order comparisons are not vacuous)."""
    G = grads(3, seed=4)
    assert len({tuple(pcgrad(G, seeded_generator(s)).tolist()) for s in range(12)}) > 1


EDGE_CASES = {
    "all zero": torch.zeros(3, 6, dtype=F64),
    "one zero row": torch.cat([torch.zeros(1, 6, dtype=F64), grads(2, P=6)]),
    "identical rows": grads(1, P=6).repeat(3, 1),
    "0 in the convex hull": torch.cat([grads(1, P=6), -grads(1, P=6), grads(1, P=6, seed=1)]),
    "float32": grads(3, P=6).float(),
    "tiny": 1e-6 * grads(3, P=6),
    "huge": 1e6 * grads(3, P=6),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_degenerate_inputs_give_finite_updates_in_the_input_dtype(case: str) -> None:
    G = EDGE_CASES[case]
    for name in GRADIENT_METHODS:
        d = build(name, ["a", "b", "c"]).aggregate(G, torch.ones(3, dtype=G.dtype), 0)
        assert d.dtype == G.dtype and torch.isfinite(d).all(), name
        if case == "all zero":
            assert not d.any(), name
        if case == "identical rows" and name in ("mgda", "upgrad", "dualproj", "mean", "imtl"):
            torch.testing.assert_close(d, G[0], msg=name)
        if case == "identical rows" and name in ("pcgrad", "gradvac", "sum"):  # nothing conflicts: the sum
            torch.testing.assert_close(d, 3 * G[0], msg=name)
