"""Small numerical helpers shared by the gradient methods.

Everything here works on the ``[K, K]`` Gramian ``Q = G G^T`` of the task gradients (K = number of tasks), in
float64 numpy on the CPU: the solves are tiny, and only the final weighted sum ``w @ G`` touches the ``[K,
P]`` gradients. No cvxpy: the quadratic programs reduce to non-negative least squares
(``scipy.optimize.nnls``) and the Nash/FairGrad fixed point to a Newton method on a strictly convex function.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import nnls

from mtfuse.gradients import gramian  # noqa: F401  (G G^T in float64; used by every method)


def as_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


#: columns of G per block in the elementwise methods (GradDrop, DB-MTL, ExcessMTL): their [K, block]
#: temporaries stay in cache, and none is [K, P]
COLUMN_BLOCK = 1 << 16


def column_blocks(P: int, block: int | None = None) -> list[slice]:
    """Slices covering ``range(P)`` in blocks of ``block`` columns (default ``COLUMN_BLOCK``)."""
    b = block or COLUMN_BLOCK
    return [slice(s, s + b) for s in range(0, P, b)]


def combine_rows(w: torch.Tensor | np.ndarray, G: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k G_k`` in G's dtype and device."""
    w_t = torch.as_tensor(w, dtype=torch.float64).to(device=G.device, dtype=G.dtype)
    return w_t @ G


def psd_sqrt(Q: np.ndarray) -> np.ndarray:
    """``R`` with ``R^T R = Q`` for a symmetric PSD ``Q`` (negative rounding-error eigenvalues clipped)."""
    lam, V = np.linalg.eigh((Q + Q.T) / 2)
    return np.sqrt(np.clip(lam, 0.0, None))[:, None] * V.T


def normalise_trace(Q: np.ndarray) -> np.ndarray | None:
    """``Q / trace(Q)``, or ``None`` when every gradient is exactly zero."""
    tr = float(np.trace(Q))
    return Q / tr if tr > 0 else None


def project_dual_cone(Q: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Weights of the projections of ``J^T u`` (each row ``u`` of ``U``) onto the dual cone of J's rows.

    Solves ``min_v v^T Q v  s.t.  v >= u`` (Proposition 1 of Quinton & Rey 2024) exactly: with ``v = u + z``,
    ``z >= 0`` and ``Q = R^T R`` it is the non-negative least squares ``min_z ||R z + R u||^2``.
    """
    R = psd_sqrt(Q)
    U2 = np.atleast_2d(np.asarray(U, dtype=np.float64))
    out = np.empty_like(U2)
    for k, u in enumerate(U2):
        z, _ = nnls(R, -R @ u, maxiter=50 * max(1, len(u)))
        out[k] = u + z
    return out.reshape(np.shape(U))


def min_norm_simplex(Q: np.ndarray) -> np.ndarray:
    """Exact weights ``w`` (on the simplex) of the min-norm point of the convex hull of the gradients.

    ``min_w w^T Q w  s.t.  w >= 0, sum(w) = 1`` through least-distance programming (Lawson & Hanson 1974,
    ch. 23): ``u = argmin_{u>=0} ||[R; 1^T] u - e_{K+1}||`` then ``w = u / sum(u)``. The KKT conditions of
    that NNLS give ``g_i . d >= ||d||^2`` for every task, with equality on the support of ``w``, which is
    exactly the optimality condition of the min-norm point ``d = w @ G``.
    """
    K = Q.shape[0]
    Qn = normalise_trace(Q)
    if Qn is None:
        return np.full(K, 1.0 / K)
    E = np.vstack([psd_sqrt(Qn), np.ones((1, K))])
    f = np.zeros(K + 1)
    f[-1] = 1.0
    u, _ = nnls(E, f, maxiter=50 * K)
    return u / u.sum()


def least_distance(E: np.ndarray, h: np.ndarray) -> np.ndarray | None:
    """``argmin ||x||  s.t.  E x >= h`` exactly, or ``None`` when no ``x`` satisfies the constraints.

    Least-distance programming (Lawson & Hanson 1974, ch. 23): with ``u = argmin_{u>=0} ||[E^T; h^T] u -
    e_{n+1}||`` and residual ``r``, the solution is ``x = -r[:n] / r[n]``; a zero residual means infeasible
    (and so does a solution that misses the constraints: the residual is then rounding noise).
    """
    n = E.shape[1]
    A = np.vstack([E.T, h[None, :]])
    f = np.zeros(n + 1)
    f[-1] = 1.0
    u, _ = nnls(A, f, maxiter=50 * max(1, A.shape[1]))
    r = A @ u - f
    if abs(r[-1]) <= 1e-14:
        return None
    x = -r[:n] / r[-1]
    # near the edge of feasibility the residual is rounding noise: check the constraints themselves
    tol = 1e-12 * (
        1.0 + float(np.abs(h).max(initial=0.0)) + float(np.abs(E).max(initial=0.0) * np.abs(x).sum())
    )
    return x if float(np.min(E @ x - h, initial=0.0)) >= -tol else None


def project_simplex(y: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort-based, Held et al. 1974)."""
    s = np.sort(y)[::-1]
    css = np.cumsum(s) - 1.0
    idx = np.arange(1, len(y) + 1)
    rho = np.nonzero(s - css / idx > 0)[0][-1]
    return np.maximum(y - css[rho] / (rho + 1.0), 0.0)


def fair_fixed_point(Q: np.ndarray, alpha: float, max_iters: int = 100, tol: float = 1e-12) -> np.ndarray:
    """The positive ``w`` with ``(Q w)_i = w_i^(-1/alpha)`` for every task (alpha > 0).

    alpha = 1 is Nash-MTL's ``G G^T w = 1/w``; other alphas are FairGrad's alpha-fairness condition. It is the
    stationary point of the strictly convex ``f(w) = w^T Q w / 2 - sum_i h(w_i)`` with ``h'(w) =
    w^(-1/alpha)``, found by damped Newton steps that stay in ``w > 0``. Solved on ``Q / trace(Q)`` then
    rescaled exactly (``w(sQ) = s^(-alpha/(alpha+1)) w(Q)``) so the conditioning does not depend on the
    gradients' scale.

    When a non-negative combination of the gradients vanishes (0 is in their convex hull: no common descent
    direction), ``f`` is unbounded below and there is no solution; the iterations then stop (after
    ``max_iters``, or when the Newton system is singular) with large weights on the cancelling tasks.
    """
    K = Q.shape[0]
    tr = float(np.trace(Q))
    if tr <= 0:
        raise ValueError("all task gradients are zero: the fair/Nash weights are undefined")
    Qn = Q / tr
    p = 1.0 / alpha

    def h(w: np.ndarray) -> np.ndarray:
        return np.log(w) if alpha == 1.0 else w ** (1.0 - p) / (1.0 - p)

    def f(w: np.ndarray) -> float:
        return float(0.5 * w @ Qn @ w - h(w).sum())

    w = np.ones(K)
    for _ in range(max_iters):
        grad = Qn @ w - w**-p
        if np.linalg.norm(grad) <= tol * max(1.0, float(np.linalg.norm(w**-p))):
            break
        H = Qn + np.diag(p * w ** (-p - 1.0))
        try:
            step = -np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:  # H singular to working precision: no solution (see above)
            step = -np.linalg.lstsq(H, grad, rcond=None)[0]
        if not np.all(np.isfinite(step)):
            break
        neg = step < 0
        t = min(1.0, 0.99 * float(np.min(-w[neg] / step[neg]))) if neg.any() else 1.0
        f0, slope = f(w), float(grad @ step)
        while t > 1e-12 and f(w + t * step) > f0 + 1e-4 * t * slope:
            t *= 0.5
        if t <= 1e-12:
            break
        w = w + t * step
    return w * tr ** (-alpha / (alpha + 1.0))
