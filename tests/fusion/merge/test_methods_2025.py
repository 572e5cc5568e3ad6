"""The merge methods added in issue 13 section 1: invariants, hand-written references, parity with mergekit.

- TSV-M (``tsv_m``), Iso-C / Iso-CTS (``iso_c``, ``iso_cts``) and WUDI (``wudi``) are checked against direct,
  unoptimised restatements of the papers' formulas written after the official code (zero-padded buffers,
  autograd + ``torch.optim.Adam``), and for their defining properties (orthogonal tasks add up, flat spectra,
  the loss goes down);
- ``karcher``, ``sce``, ``nuslerp``, ``multislerp``, ``della_linear`` and ``breadcrumbs_ties`` are compared
  with mergekit 0.1.5's own methods on random tensors (skipped when mergekit is not installed; largest
  differences seen: 0, except 2.4e-7 for ``sce``, whose weights mtfuse computes in float64), plus invariants.
  Counts (SCE's top-k, Breadcrumbs' masks) round here and truncate there: the tests use integral counts.

The generic checks (shape and dtype kept for 0-D to 3-D tensors in four dtypes, Params reject unknown keys,
papers cited, seeded stochastic methods reproducible) run for these methods too in ``test_methods.py``.
"""

from __future__ import annotations

import pytest
import torch

from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.fusion.merge import MERGE_METHODS
from mtfuse.fusion.merge import primitives as P
from mtfuse.fusion.merge.methods.sce import sce_select_mask
from mtfuse.fusion.merge.methods.wudi import wudi_loss

ATOL = 1e-6
NEW = [
    "breadcrumbs_ties",
    "della_linear",
    "iso_c",
    "iso_cts",
    "karcher",
    "multislerp",
    "nuslerp",
    "sce",
    "tsv_m",
    "wudi",
]
W = [0.5, 1.0, 2.0]


def _models(n: int = 3, shape: tuple[int, ...] = (8, 25), seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g, dtype=torch.float64)
    models = [base + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(n)]
    return base.to(dtype), [m.to(dtype) for m in models]


def _merge(name: str, models, base, params=None, weights=None, seed: int = 0):
    method = MERGE_METHODS.get(name)
    return method.merge(models, base, params, weights, generator=torch.Generator().manual_seed(seed))


def _close(actual, expected, atol=ATOL, rtol=0.0):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------------------- declarations


def test_the_new_methods_are_registered_with_their_contracts():
    assert set(NEW) <= set(MERGE_METHODS.names())
    for name in NEW:
        m = MERGE_METHODS.get(name)
        assert m.needs_base == (name != "karcher")
        assert m.stochastic == (name == "della_linear")
        assert m.takes_weights == (name != "sce")
        assert m.needs_stats is None
        assert not m.negative_weights
    assert MERGE_METHODS.get("nuslerp").num_models == (2, 2)


@pytest.mark.parametrize("name", NEW)
def test_deterministic_and_independent_of_the_generator_unless_stochastic(name):
    base, models = _models(2 if name == "nuslerp" else 3)
    a = _merge(name, models, base, seed=1)
    assert torch.equal(a, _merge(name, models, base, seed=1))
    if not MERGE_METHODS.get(name).stochastic:
        assert torch.equal(a, _merge(name, models, base, seed=2))


# ------------------------------------------------------------------------------------- TSV-M (CVPR 2025)


def _tsv_reference(tvs):
    """The official ``compute_and_sum_svd_mem_reduction`` restated: zero-padded U, S, V buffers, the top
    int(r / T) triplets of task i in block i, then U_u V_u diag(S) U_v V_v."""
    if tvs[0].dim() != 2:
        return sum(tvs) / len(tvs)
    t = len(tvs)
    sum_u = sum_s = sum_v = None
    for i, tv in enumerate(tvs):
        u, s, v = torch.linalg.svd(tv, full_matrices=False)
        if i == 0:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(v)
        k = int(s.shape[0] * (1 / t))
        sum_u[:, i * k : (i + 1) * k] = u[:, :k]
        sum_s[i * k : (i + 1) * k] = s[:k]
        sum_v[i * k : (i + 1) * k, :] = v[:k, :]
    u_u, _, v_u = torch.linalg.svd(sum_u, full_matrices=False)
    u_v, _, v_v = torch.linalg.svd(sum_v, full_matrices=False)
    return torch.linalg.multi_dot((u_u, v_u, torch.diag(sum_s), u_v, v_v))


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (7,), (3, 4, 5)])
def test_tsv_matches_the_official_formula(n, shape):
    base, models = _models(n, shape, dtype=torch.float64)
    tvs = [m - base for m in models]
    out = _merge("tsv_m", models, base, {"scale": 0.8})
    _close(out, base + 0.8 * _tsv_reference(tvs), atol=1e-10)
    w = [0.5, 2.0, 1.0, 0.3][:n]
    weighted = _merge("tsv_m", models, base, None, w)
    _close(weighted, base + _tsv_reference([wi * tv for wi, tv in zip(w, tvs, strict=True)]), atol=1e-10)


def test_tsv_one_full_rank_model_is_base_plus_scaled_task_vector():
    base, (model,) = _models(1, (10, 6))
    _close(_merge("tsv_m", [model], base, {"scale": 0.5}), base + 0.5 * (model - base))


def test_tsv_of_tasks_in_orthogonal_subspaces_is_task_arithmetic():
    # rank-4 task vectors with mutually orthogonal left and right singular spaces: nothing to decorrelate
    g = torch.Generator().manual_seed(3)
    qu = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64)).Q
    qv = torch.linalg.qr(torch.randn(18, 18, generator=g, dtype=torch.float64)).Q
    base = torch.randn(12, 18, generator=g, dtype=torch.float64)
    tvs = [
        qu[:, 4 * i : 4 * i + 4]
        @ torch.diag(torch.rand(4, generator=g, dtype=torch.float64) + 0.1)
        @ qv[:, 4 * i : 4 * i + 4].T
        for i in range(3)
    ]
    out = _merge("tsv_m", [base + tv for tv in tvs], base)
    _close(out, base + sum(tvs), atol=1e-10)


def test_tsv_with_more_tasks_than_the_rank_averages():
    # a 2 x 30 matrix, 3 tasks: int(2 / 3) = 0 singular vectors each; the mean (the official code: zero)
    base, models = _models(3, (2, 30))
    _close(_merge("tsv_m", models, base), base + sum(m - base for m in models) / 3)


def test_polar_factor_is_the_orthogonal_procrustes_solution():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(9, 5, generator=g, dtype=torch.float64)
    q = P.polar_factor(a)
    _close(q.T @ q, torch.eye(5, dtype=torch.float64), atol=1e-12)
    sym = q.T @ a  # a = q (q^T a) with q^T a symmetric positive definite: the polar decomposition
    _close(sym, sym.T, atol=1e-12)
    assert torch.linalg.eigvalsh(sym).min() > 0
    _close(P.polar_factor(q), q, atol=1e-12)  # already orthonormal: unchanged
    assert P.polar_factor(a.T).shape == (5, 9)


# --------------------------------------------------------------------------------- Iso-C / Iso-CTS (ICML 2025)


def _iso_c_reference(tvs):
    if tvs[0].dim() != 2:
        return sum(tvs) / len(tvs)
    u, s, v = torch.linalg.svd(sum(tvs), full_matrices=False)
    return torch.linalg.multi_dot((u, torch.diag(torch.ones_like(s) * s.mean()), v))


def _iso_cts_reference(tvs, fraction):
    """The official ``iso_cts`` restated: zero-filled combined U, S, V (task blocks, then the common block)."""
    if tvs[0].dim() != 2:
        return sum(tvs) / len(tvs)
    r, t = min(tvs[0].shape), len(tvs)
    k = int(r * fraction)
    k = r - round((r - k) / t) * t
    u, s, v = torch.linalg.svd(sum(tvs), full_matrices=False)
    cu, cs, cv = u[:, :k], s[:k], v[:k, :]
    per = int((r - k) / t)
    comb_u = comb_s = comb_v = None
    for i, w in enumerate(tvs):
        w_ts = w - cu @ cu.T @ w
        u_ts, s_ts, v_ts = torch.linalg.svd(w_ts, full_matrices=False)
        if i == 0:
            comb_u, comb_s, comb_v = torch.zeros_like(u_ts), torch.zeros_like(s_ts), torch.zeros_like(v_ts)
        comb_u[:, i * per : (i + 1) * per] = u_ts[:, :per]
        comb_s[i * per : (i + 1) * per] = s_ts[:per]
        comb_v[i * per : (i + 1) * per, :] = v_ts[:per, :]
    comb_u[:, t * per : t * per + k] = cu
    comb_s[t * per : t * per + k] = cs
    comb_v[t * per : t * per + k, :] = cv
    uu, _, vu = torch.linalg.svd(comb_u, full_matrices=False)
    uv, _, vv = torch.linalg.svd(comb_v, full_matrices=False)
    flat = torch.ones_like(comb_s) * comb_s.mean()
    return torch.linalg.multi_dot((uu @ vu, torch.diag(flat), uv @ vv))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("shape", [(12, 20), (21, 10), (7,), ()])
def test_iso_c_matches_the_official_formula(n, shape):
    base, models = _models(n, shape, dtype=torch.float64)
    tvs = [m - base for m in models]
    _close(_merge("iso_c", models, base, {"scale": 1.3}), base + 1.3 * _iso_c_reference(tvs), atol=1e-10)
    w = [2.0, 0.5, 1.0][:n]
    out = _merge("iso_c", models, base, None, w)
    _close(out, base + _iso_c_reference([wi * tv for wi, tv in zip(w, tvs, strict=True)]), atol=1e-10)


def test_iso_c_has_an_isotropic_spectrum_on_the_summed_subspace():
    base, models = _models(3, (10, 16), dtype=torch.float64)
    total = sum(m - base for m in models)
    delta = _merge("iso_c", models, base) - base
    sv = torch.linalg.svdvals(delta)
    _close(sv, torch.full_like(sv, float(torch.linalg.svdvals(total).mean())), atol=1e-10)
    u = torch.linalg.svd(total, full_matrices=False).U
    _close(u @ (u.T @ delta), delta, atol=1e-10)  # same left singular space as the sum


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("fraction", [0.8, 0.5, 0.3])
@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])
def test_iso_cts_matches_the_official_formula(n, fraction, shape):
    base, models = _models(n, shape, dtype=torch.float64)
    tvs = [m - base for m in models]
    out = _merge("iso_cts", models, base, {"common_space_fraction": fraction, "scale": 0.7})
    _close(out, base + 0.7 * _iso_cts_reference(tvs, fraction), atol=1e-10)


def test_iso_cts_is_isotropic_and_reduces_to_iso_c():
    base, models = _models(3, (12, 20), dtype=torch.float64)
    delta = _merge("iso_cts", models, base) - base
    sv = torch.linalg.svdvals(delta)
    _close(sv, torch.full_like(sv, float(sv.mean())), atol=1e-10)
    # all of the rank for the common subspace: Iso-C
    _close(_merge("iso_cts", models, base, {"common_space_fraction": 1.0}), _merge("iso_c", models, base))
    # a matrix too small to split (2 x 30, 3 tasks): the common subspace takes everything, Iso-C again
    b2, m2 = _models(3, (2, 30))
    _close(_merge("iso_cts", m2, b2), _merge("iso_c", m2, b2))
    # non-matrices: the mean of the task vectors
    b1, m1 = _models(3, (7,))
    _close(_merge("iso_cts", m1, b1), b1 + sum(m - b1 for m in m1) / 3)


# ------------------------------------------------------------------------------------------ WUDI (ICML 2025)


def _wudi_reference(tvs, iterations, lr):
    """The official ``get_redundant_task_vector`` restated: autograd through the loss, torch.optim.Adam."""
    vectors = torch.stack(tvs)
    merging = torch.nn.Parameter(vectors.sum(dim=0).clone())
    opt = torch.optim.Adam([merging], lr=lr, weight_decay=0)
    l2 = torch.square(torch.norm(vectors.reshape(vectors.shape[0], -1), p=2, dim=-1))
    for _ in range(iterations):
        inner = torch.matmul(merging.unsqueeze(0) - vectors, vectors.transpose(1, 2))
        loss = torch.sum(torch.square(inner) / l2[:, None, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return merging.detach()


@pytest.mark.parametrize(("iterations", "lr"), [(300, 1e-5), (60, 1e-3)])
@pytest.mark.parametrize("shape", [(8, 25), (25, 8)])
def test_wudi_matches_the_official_optimisation(iterations, lr, shape):
    base, models = _models(3, shape, dtype=torch.float64)
    tvs = [m - base for m in models]
    out = _merge("wudi", models, base, {"iterations": iterations, "lr": lr})
    _close(out, base + _wudi_reference(tvs, iterations, lr), atol=1e-9)
    # float32, the paper's defaults
    b32, m32 = base.float(), [m.float() for m in models]
    ref32 = b32 + _wudi_reference([m - b32 for m in m32], 300, 1e-5)
    _close(_merge("wudi", m32, b32), ref32, atol=1e-5)


def test_wudi_lowers_the_interference_loss_from_task_arithmetic():
    base, models = _models(3, (8, 25), dtype=torch.float64)
    tvs = [m - base for m in models]
    start = wudi_loss(sum(tvs), tvs)
    short = wudi_loss(_merge("wudi", models, base, {"iterations": 50, "lr": 1e-3}) - base, tvs)
    long = wudi_loss(_merge("wudi", models, base, {"iterations": 500, "lr": 1e-3}) - base, tvs)
    assert long < short < start
    # no steps: task arithmetic (the initialisation)
    _close(_merge("wudi", models, base, {"iterations": 0, "scale": 0.5}), base + 0.5 * sum(tvs), atol=1e-12)


def test_wudi_one_model_zero_task_vectors_and_non_matrices():
    base, (model,) = _models(1, (8, 25))
    # one task: tau is the minimiser and the start, the gradient is 0
    _close(_merge("wudi", [model], base, {"lr": 1e-2}), model)
    # a zero task vector adds nothing to the loss (no division by 0)
    base2, models = _models(2, (8, 25))
    out = _merge("wudi", [*models, base2.clone()], base2, {"lr": 1e-3})
    assert torch.isfinite(out).all()
    _close(out, _merge("wudi", models, base2, {"lr": 1e-3}), atol=1e-6)
    _close(_merge("wudi", [base2, base2.clone()], base2), base2)
    b1, m1 = _models(3, (3, 4, 5))
    _close(_merge("wudi", m1, b1), b1 + sum(m - b1 for m in m1) / 3)


def test_wudi_runs_under_inference_mode():
    base, models = _models(3)
    expected = _merge("wudi", models, base)
    with torch.inference_mode():
        assert torch.equal(_merge("wudi", models, base), expected)


# ------------------------------------------------------------------------------------- mergekit methods


@pytest.mark.parametrize("name", ["karcher", "sce", "multislerp", "nuslerp"])
def test_identical_models_are_returned(name):
    base, (model,) = _models(1)
    same = [model.clone() for _ in range(2 if name == "nuslerp" else 3)]
    _close(_merge(name, same, base), model, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params"),
    [("breadcrumbs_ties", {"density": 1.0, "gamma": 0.0, "normalize": True}), ("della_linear", None)],
)
def test_identical_models_are_returned_by_the_normalised_sparse_methods(name, params):
    base, (model,) = _models(1)
    same = [model.clone() for _ in range(3)]
    params = params or {"density": 1.0, "epsilon": 0.0, "normalize": True}
    _close(_merge(name, same, base, params, W), model)


def test_karcher_of_two_models_is_their_geodesic_point():
    _, (a, b) = _models(2)
    b = b * (torch.linalg.vector_norm(a) / torch.linalg.vector_norm(b))  # equal norms: the slerp's norm
    for w, t in (([1.0, 1.0], 0.5), ([1.0, 3.0], 0.75)):
        expected = _merge("slerp", [a, b], None, {"t": t})
        _close(_merge("karcher", [a, b], None, None, w), expected, atol=1e-5)
    # the result's norm is the weighted mean of the norms
    c = 3 * b
    out = _merge("karcher", [a, c], None, None, [1.0, 1.0])
    _close(torch.linalg.vector_norm(out), (torch.linalg.vector_norm(a) + torch.linalg.vector_norm(c)) / 2)
    with pytest.raises(ConfigError, match="sum to 0"):
        _merge("karcher", [a, c], None, None, [0.0, 0.0])


def test_sce_formula_without_selection_or_sign_conflicts():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(8, 25, generator=g)
    sign = torch.where(torch.rand(8, 25, generator=g) < 0.5, -1.0, 1.0)
    tvs = [sign * (0.01 + k * torch.rand(8, 25, generator=g)) for k in (0.1, 0.3, 1.0)]
    energy = [float(tv.square().mean()) for tv in tvs]
    expected = base + sum(e * tv for e, tv in zip(energy, tvs, strict=True)) / sum(energy)
    _close(_merge("sce", [base + tv for tv in tvs], base), expected)
    # all task vectors 0: the base
    assert torch.equal(_merge("sce", [base.clone(), base.clone()], base), base)
    with pytest.raises(ConfigError, match="takes no per-model weights"):
        _merge("sce", [base + tv for tv in tvs], base, None, W)


def test_sce_selects_the_high_variance_entries():
    base = torch.zeros(10)
    low = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    high = low.clone()
    high[[2, 7]] = 5.0  # variance only at entries 2 and 7
    assert sce_select_mask([low, high], 0.5).nonzero().flatten().tolist() == [2]
    assert sce_select_mask([low, high], 1.0).nonzero().flatten().tolist() == [2, 7]
    out = _merge("sce", [base + low, base + high], base, {"select_topk": 0.5})
    assert out.nonzero().flatten().tolist() == [2]


def test_nuslerp_without_task_vectors_is_slerp_at_the_weight_ratio():
    base, (a, b) = _models(2)
    for w, t in (([1.0, 3.0], 0.75), ([1.0, 1.0], 0.5), ([0.0, 0.0], 0.5), ([2.0, 0.0], 0.0)):
        out = _merge("nuslerp", [a, b], base, {"task_vectors": False}, w)
        _close(out, _merge("slerp", [a, b], None, {"t": t}), atol=1e-5)
    # with task vectors (default): base + slerp of the task vectors; row-wise: one angle per vector
    out = _merge("nuslerp", [a, b], base, {"flatten": False}, [1.0, 3.0])
    for i in range(a.shape[0]):
        row = _merge("slerp", [a[i] - base[i], b[i] - base[i]], None, {"t": 0.75})
        _close(out[i], base[i] + row, atol=1e-5)


def test_multislerp_properties():
    base, models = _models(3)
    tvs = [m - base for m in models]
    out = _merge("multislerp", models, base, None, W)
    mean_norm = sum(w * torch.linalg.vector_norm(tv) for w, tv in zip(W, tvs, strict=True)) / sum(W)
    _close(torch.linalg.vector_norm(out - base), mean_norm, atol=1e-5, rtol=1e-5)
    _close(_merge("multislerp", models[:1], base), models[0])
    # opposite task vectors with equal weights: 2 models are interpolated linearly (the base), 3+ refused
    # (exactly opposite: a zero base, as base + x - base is not x in float32)
    x, zero = torch.randn(8, 25, generator=torch.Generator().manual_seed(4)), torch.zeros(8, 25)
    _close(_merge("multislerp", [x, -x], zero), zero)
    with pytest.raises(MtfuseError, match="weighted mean of the normalised inputs is 0"):
        _merge("multislerp", [x, -x, x, -x], zero)
    # a tensor no run changed (every task vector 0, e.g. the pooler of mean-pooled runs): the base, not an error
    _close(_merge("multislerp", [base.clone(), base.clone(), base.clone()], base, None, W), base)


def test_della_linear_reduces_to_dare_linear_and_task_arithmetic():
    base, models = _models()
    della = _merge("della_linear", models, base, {"density": 0.4, "epsilon": 0.0}, W, seed=7)
    dare = _merge("dare_linear", models, base, {"density": 0.4}, W, seed=7)
    _close(della, dare)
    dense = _merge("della_linear", models, base, {"density": 1.0, "epsilon": 0.0, "scale": 0.6}, W)
    _close(dense, _merge("task_arithmetic", models, base, {"scale": 0.6}, W))


def test_breadcrumbs_ties_reduces_to_ties_and_breadcrumbs():
    base, models = _models()
    bt = _merge("breadcrumbs_ties", models, base, {"density": 1.0, "gamma": 0.0, "normalize": True}, W)
    _close(bt, _merge("ties", models, base, {"density": 1.0}, W))
    # no sign conflicts: the sign election keeps everything, Breadcrumbs-TIES (sum) = Breadcrumbs
    g = torch.Generator().manual_seed(1)
    sign = torch.where(torch.rand(8, 25, generator=g) < 0.5, -1.0, 1.0)
    same_sign = [base + sign * (0.01 + torch.rand(8, 25, generator=g)) for _ in range(3)]
    params = {"density": 0.6, "gamma": 0.05}
    _close(
        _merge("breadcrumbs_ties", same_sign, base, params, W),
        _merge("breadcrumbs", same_sign, base, params, W),
    )


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("iso_cts", {"common_space_fraction": 0.0}, "common_space_fraction"),
        ("iso_cts", {"common_space_fraction": 1.5}, "common_space_fraction"),
        ("tsv_m", {"scale": 0.0}, "scale"),
        ("wudi", {"iterations": -1}, "iterations"),
        ("wudi", {"lr": 0.0}, "lr"),
        ("sce", {"select_topk": 0.0}, "select_topk"),
        ("karcher", {"max_iter": -1}, "max_iter"),
        ("della_linear", {"density": 0.9, "epsilon": 0.2}, "epsilon"),
        ("breadcrumbs_ties", {"density": 0.95, "gamma": 0.1}, "density \\+ gamma"),
        ("nuslerp", {"t": 0.5}, "unknown parameter 't'"),
    ],
)
def test_invalid_params(name, params, match):
    with pytest.raises(ConfigError, match=match):
        MERGE_METHODS.get(name).params(params)


def test_nuslerp_needs_exactly_two_models():
    base, models = _models(3)
    with pytest.raises(ConfigError, match="'nuslerp' needs exactly 2 models, got 3"):
        _merge("nuslerp", models, base, None, None)


# --------------------------------------------------------------------------------- parity with mergekit


@pytest.fixture(scope="module")
def mk():
    pytest.importorskip("mergekit.merge_methods")
    from mergekit.merge_methods import merge_tensors

    return merge_tensors


def test_mergekit_karcher(mk):
    _, models = _models()
    for max_iter in (10, 2):
        expected = mk(models, "karcher", parameters={"max_iter": max_iter})
        _close(_merge("karcher", models, None, {"max_iter": max_iter}), expected)
    # mergekit's method takes no weights; its function does: the same normalised weights
    from mergekit.merge_methods.karcher import karcher_merge_tensors

    expected = karcher_merge_tensors(models, [w / sum(W) for w in W])
    _close(_merge("karcher", models, None, None, W), expected)


@pytest.mark.parametrize("select_topk", [1.0, 0.5, 0.2])
def test_mergekit_sce(mk, select_topk):
    base, models = _models(4)
    expected = mk([base, *models], "sce", parameters={"select_topk": select_topk}, base_index=0)
    _close(_merge("sce", models, base, {"select_topk": select_topk}), expected)


@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("row_wise", [True, False])
@pytest.mark.parametrize("task_vectors", [True, False])
def test_mergekit_nuslerp(mk, flatten, row_wise, task_vectors):
    base, models = _models(2)
    params = {"weight": [1.0, 3.0], "nuslerp_flatten": flatten, "nuslerp_row_wise": row_wise}
    inputs, base_index = ([base, *models], 0) if task_vectors else (models, None)
    expected = mk(inputs, "nuslerp", parameters=params, base_index=base_index)
    ours = {"flatten": flatten, "row_wise": row_wise, "task_vectors": task_vectors}
    _close(_merge("nuslerp", models, base, ours, [1.0, 3.0]), expected)


@pytest.mark.parametrize("task_vectors", [True, False])
@pytest.mark.parametrize("normalize_weights", [True, False])
def test_mergekit_multislerp(mk, task_vectors, normalize_weights):
    base, models = _models()
    params = {"weight": W, "normalize_weights": normalize_weights}
    inputs, base_index = ([base, *models], 0) if task_vectors else (models, None)
    expected = mk(inputs, "multislerp", parameters=params, base_index=base_index)
    ours = {"task_vectors": task_vectors, "normalize_weights": normalize_weights}
    _close(_merge("multislerp", models, base, ours, W), expected)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ({"density": 0.8, "gamma": 0.05, "scale": 0.7}, {"density": 0.8, "gamma": 0.05, "lambda": 0.7}),
        (
            {"density": 0.5, "gamma": 0.1, "normalize": True},
            {"density": 0.5, "gamma": 0.1, "normalize": True},
        ),
    ],
)
def test_mergekit_breadcrumbs_ties(mk, ours, theirs):
    base, models = _models()
    expected = mk([base, *models], "breadcrumbs_ties", parameters={"weight": W, **theirs}, base_index=0)
    _close(_merge("breadcrumbs_ties", models, base, ours, W), expected)


@pytest.mark.parametrize("normalize", [False, True])
def test_mergekit_della_linear_without_rescale(mk, normalize):
    # the same Bernoulli draws (global RNG there, the seeded generator here); rescaling conventions differ
    # (mergekit restores the L1 norm, mtfuse divides by the keep probability), as for della in test_methods
    base, models = _models()
    theirs = {"weight": W, "density": 0.5, "epsilon": 0.2, "rescale": False, "normalize": normalize}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = mk([base, *models], "della_linear", parameters=theirs, base_index=0)
    ours = {"density": 0.5, "epsilon": 0.2, "rescale": False, "normalize": normalize}
    _close(_merge("della_linear", models, base, ours, W, seed=5), expected)
