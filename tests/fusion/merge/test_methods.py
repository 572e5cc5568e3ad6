"""Merge methods (``mtfuse.fusion.merge``): invariants, validation, and parity with peft and mergekit.

Parity tests run when the reference is installed (test-only: ``peft==0.21.2``; ``mergekit==0.1.5`` plus its
import-time dependency ``immutables``) and are skipped otherwise. Tolerance: atol 1e-6 in float32 (the
results agree to the last bit in practice; the slack covers summation order).
"""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel, ValidationError

from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.fusion.merge import MERGE_METHODS, tensor_generator
from mtfuse.fusion.merge import primitives as P

ATOL = 1e-6
ALL = MERGE_METHODS.names()
TENSOR_ONLY = [n for n in ALL if not MERGE_METHODS.get(n).needs_stats]  # need nothing but the tensors
RANDOM = [n for n in ALL if MERGE_METHODS.get(n).stochastic]
# Params under which a sparsifying method keeps everything (density 1, no outlier removal).
DENSE = {
    "ties": {"density": 1.0},
    "dare_linear": {"density": 1.0},
    "dare_ties": {"density": 1.0},
    "breadcrumbs": {"density": 1.0, "gamma": 0.0},
    "della": {"density": 1.0, "epsilon": 0.0},
    "della_linear": {"density": 1.0, "epsilon": 0.0},
    "breadcrumbs_ties": {"density": 1.0, "gamma": 0.0},
}
# Methods that change even a single model (Iso flattens its spectrum): tests/fusion/merge/test_methods_2025.py
RESHAPE_ONE_MODEL = {"iso_c", "iso_cts"}


def _models(n: int = 3, shape: tuple[int, ...] = (8, 25), seed: int = 0, dtype=torch.float32):
    """A base tensor and n fine-tuned tensors near it."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    models = [base + 0.1 * torch.randn(shape, generator=g) for _ in range(n)]
    return base.to(dtype), [m.to(dtype) for m in models]


def _merge(name: str, models, base, params=None, weights=None, seed: int = 0):
    method = MERGE_METHODS.get(name)
    return method.merge(models, base, params, weights, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- registry


def test_registry_lists_every_method():
    assert TENSOR_ONLY == [
        "breadcrumbs",
        "breadcrumbs_ties",
        "dare_linear",
        "dare_ties",
        "della",
        "della_linear",
        "iso_c",
        "iso_cts",
        "karcher",
        "linear",
        "model_stock",
        "multislerp",
        "nuslerp",
        "sce",
        "slerp",
        "task_arithmetic",
        "ties",
        "tsv_m",
        "wudi",
    ]
    # one registry: the data-dependent methods are in it and declare the statistics they need
    needs = {n: MERGE_METHODS.get(n).needs_stats for n in ALL if n not in TENSOR_ONLY}
    assert needs == {"adamerging": "adamerging", "fisher": "fisher", "greedy_soup": "soup", "regmean": "gram"}
    with pytest.raises(ConfigError, match="unknown merge method 'soup'; choose from"):
        MERGE_METHODS.get("soup")


@pytest.mark.parametrize("name", ALL)
def test_each_method_declares_params_and_cites_its_paper(name):
    method = MERGE_METHODS.get(name)
    assert method.name == name
    assert issubclass(method.Params, BaseModel)
    assert method.Params.model_config.get("extra") == "forbid"
    method.Params()  # the defaults are valid
    module_doc = __import__(method.fn.__module__, fromlist=["_"]).__doc__
    assert "arxiv.org" in module_doc or "SIGGRAPH" in module_doc
    assert method.description


# ------------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize(
    "name",
    [n for n in TENSOR_ONLY if MERGE_METHODS.get(n).num_models[0] <= 1 and n not in RESHAPE_ONE_MODEL],
)
@pytest.mark.parametrize("weights", [None, [1.0]])
def test_one_model_with_weight_one_is_returned_unchanged(name, weights):
    if weights is not None and not MERGE_METHODS.get(name).takes_weights:
        pytest.skip(f"{name} takes no per-model weights")
    base, (model,) = _models(1)
    out = _merge(name, [model], base, DENSE.get(name), weights)
    torch.testing.assert_close(out, model, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["ties", "dare_ties", "della"])
def test_one_model_is_unchanged_by_the_ties_family_whatever_its_weight(name):
    # the disjoint merge is a weighted MEAN over agreeing models: one model's weight cancels out
    base, (model,) = _models(1)
    out = _merge(name, [model], base, DENSE[name], [0.3])
    torch.testing.assert_close(out, model, atol=ATOL, rtol=0)


def _no_conflict_models(n: int = 3, seed: int = 1):
    """Task vectors that share their sign pattern entry by entry (no sign conflict), none exactly 0."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(8, 25, generator=g)
    sign = torch.where(torch.rand(8, 25, generator=g) < 0.5, -1.0, 1.0)
    return base, [base + sign * (0.01 + torch.rand(8, 25, generator=g)) for _ in range(n)]


def test_ties_with_density_one_and_no_sign_conflict_equals_task_arithmetic():
    base, models = _no_conflict_models()
    ta = _merge("task_arithmetic", models, base, {"scale": 0.8}, [0.5, 1.0, 2.0])
    # normalize=False: the sum over agreeing models = every model
    ties = _merge("ties", models, base, {"density": 1.0, "scale": 0.8, "normalize": False}, [0.5, 1.0, 2.0])
    torch.testing.assert_close(ties, ta, atol=ATOL, rtol=0)
    # the default normalize=True divides by the agreeing weights, i.e. by sum(w) = 1 here
    ta1 = _merge("task_arithmetic", models, base, {"scale": 0.8}, [0.2, 0.3, 0.5])
    ties1 = _merge("ties", models, base, {"density": 1.0, "scale": 0.8}, [0.2, 0.3, 0.5])
    torch.testing.assert_close(ties1, ta1, atol=ATOL, rtol=0)


def test_ties_resolves_sign_conflicts():
    base = torch.zeros(3)
    models = [torch.tensor([1.0, 2.0, -1.0]), torch.tensor([3.0, -1.0, -3.0]), torch.tensor([-1.0, 0.0, 2.0])]
    out = _merge("ties", models, base, {"density": 1.0}, None)
    # entry 0: sum 3 > 0 -> mean(1, 3); entry 1: sum 1 > 0 -> only 2 agrees (0 agrees with no sign);
    # entry 2: sum -2 < 0 -> mean(-1, -3)
    torch.testing.assert_close(out, torch.tensor([2.0, 2.0, -2.0]))
    count = _merge("ties", models, base, {"density": 1.0, "sign_method": "count"}, None)
    # entry 1 by count: +1, -1, 0 -> tie -> +1
    torch.testing.assert_close(count, torch.tensor([2.0, 2.0, -2.0]))


@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0]])
def test_dare_with_density_one_equals_task_arithmetic(weights):
    base, models = _models()
    ta = _merge("task_arithmetic", models, base, {"scale": 0.7}, weights)
    dare = _merge("dare_linear", models, base, {"density": 1.0, "scale": 0.7}, weights)
    torch.testing.assert_close(dare, ta, atol=ATOL, rtol=0)
    ties = _merge("ties", models, base, {"density": 1.0, "scale": 0.7}, weights)
    dare_ties = _merge("dare_ties", models, base, {"density": 1.0, "scale": 0.7}, weights)
    torch.testing.assert_close(dare_ties, ties, atol=ATOL, rtol=0)
    della = _merge("della", models, base, {"density": 1.0, "epsilon": 0.0, "scale": 0.7}, weights)
    torch.testing.assert_close(della, ties, atol=ATOL, rtol=0)


def test_della_with_epsilon_zero_is_dare_ties():
    # same keep probability everywhere -> the same Bernoulli draws as DARE, the same 1/density rescale
    base, models = _models()
    della = _merge("della", models, base, {"density": 0.4, "epsilon": 0.0}, seed=7)
    dare = _merge("dare_ties", models, base, {"density": 0.4}, seed=7)
    torch.testing.assert_close(della, dare, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", TENSOR_ONLY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(8, 25), (3, 4, 5), (7,), ()])
def test_output_is_finite_with_the_input_shape_and_dtype(name, dtype, shape):
    n = 2 if MERGE_METHODS.get(name).num_models[1] == 2 else 3
    base, models = _models(n, shape, dtype=dtype)
    params = {"ties": {"density": 0.3}, "dare_ties": {"density": 0.3}}.get(name)
    out = _merge(name, models, base, params)
    assert out.shape == torch.Size(shape)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    # close to the inputs' scale: nothing blew up (task vectors are ~0.1, weights 1 per model)
    assert (out.float() - base.float()).abs().max() < 5


def test_bf16_inputs_are_merged_in_float32():
    base, models = _models()
    out16 = _merge("linear", [m.bfloat16() for m in models], None)
    out32 = _merge("linear", [m.bfloat16().float() for m in models], None)
    assert torch.equal(out16, out32.bfloat16())


def test_linear_with_equal_weights_is_the_mean():
    _, models = _models(4)
    mean = torch.stack(models).mean(0)
    for weights in (None, [2.0] * 4, [0.25] * 4):
        torch.testing.assert_close(_merge("linear", models, None, None, weights), mean, atol=ATOL, rtol=0)
    out = _merge("linear", models, None, {"normalize": False}, [1.0, 0.5, 0.0, 2.0])
    torch.testing.assert_close(out, models[0] + 0.5 * models[1] + 2 * models[3], atol=ATOL, rtol=0)
    weighted = _merge("linear", models, None, None, [1.0, 0.0, 0.0, 3.0])
    torch.testing.assert_close(weighted, 0.25 * models[0] + 0.75 * models[3], atol=ATOL, rtol=0)


def test_task_arithmetic_formula_and_task_negation():
    base, models = _models(2)
    out = _merge("task_arithmetic", models, base, {"scale": 0.5}, [1.0, -1.0])
    torch.testing.assert_close(out, base + 0.5 * (models[0] - models[1]), atol=ATOL, rtol=0)
    norm = _merge("task_arithmetic", models, base, {"normalize": True}, [1.0, 3.0])
    torch.testing.assert_close(norm, base + 0.25 * (models[0] - base) + 0.75 * (models[1] - base))


def test_slerp_endpoints_and_geometry():
    _, (a, b) = _models(2)
    assert torch.equal(_merge("slerp", [a, b], None, {"t": 0.0}), a)
    assert torch.equal(_merge("slerp", [a, b], None, {"t": 1.0}), b)
    # orthogonal unit vectors: the midpoint stays on the unit circle (a lerp would have norm 1/sqrt(2))
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = _merge("slerp", [x, y], None, {"t": 0.5})
    torch.testing.assert_close(mid, torch.tensor([0.5**0.5, 0.5**0.5]))
    third = _merge("slerp", [x, y], None, {"t": 1 / 3})
    torch.testing.assert_close(third, torch.tensor([3**0.5 / 2, 0.5]))
    # (nearly) colinear -> linear interpolation, no division by sin(0)
    lerp = _merge("slerp", [a, 2 * a], None, {"t": 0.25})
    torch.testing.assert_close(lerp, 1.25 * a)
    zero = _merge("slerp", [torch.zeros(3), torch.ones(3)], None, {"t": 0.5})
    torch.testing.assert_close(zero, torch.full((3,), 0.5))


def test_model_stock():
    base, models = _models(3)
    same = [models[0].clone() for _ in range(3)]
    torch.testing.assert_close(_merge("model_stock", same, base), models[0], atol=ATOL, rtol=0)
    # models equal to the base: zero task vectors -> the base
    torch.testing.assert_close(_merge("model_stock", [base, base.clone()], base), base)
    # k = 2, orthogonal task vectors: cos 0 -> t = 0 -> the base
    b = torch.zeros(2)
    torch.testing.assert_close(_merge("model_stock", [torch.tensor([1.0, 0]), torch.tensor([0, 1.0])], b), b)
    # k = 2, cos 0.5 -> t = 2 * 0.5 / 1.5 = 2/3 of the way to the average
    m1, m2 = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 3**0.5 / 2])
    expect = (2 / 3) * (m1 + m2) / 2
    torch.testing.assert_close(_merge("model_stock", [m1, m2], b), expect)
    # opposite task vectors: cos < 0 is clamped to 0 -> the base (no extrapolation)
    torch.testing.assert_close(
        _merge("model_stock", [torch.tensor([1.0, 0]), torch.tensor([-1.0, 0.1])], b), b
    )
    # filter-wise: one ratio per row
    rows = torch.stack([torch.zeros(2), torch.zeros(2)])
    fw = _merge("model_stock", [torch.stack([m1, m1]), torch.stack([m2, -m1])], rows, {"filter_wise": True})
    torch.testing.assert_close(fw, torch.stack([expect, torch.zeros(2)]))


@pytest.mark.parametrize("name", RANDOM)
def test_random_methods_are_deterministic_given_a_seeded_generator(name):
    base, models = _models()
    params = {"density": 0.5}
    a = _merge(name, models, base, params, seed=123)
    b = _merge(name, models, base, params, seed=123)
    c = _merge(name, models, base, params, seed=124)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1, g2 = tensor_generator(0, "encoder.layer.0.weight"), tensor_generator(0, "encoder.layer.0.weight")
    method = MERGE_METHODS.get(name)
    assert torch.equal(
        method.merge(models, base, params, None, generator=g1),
        method.merge(models, base, params, None, generator=g2),
    )
    g3 = tensor_generator(0, "encoder.layer.1.weight")
    assert not torch.equal(method.merge(models, base, params, None, generator=g3), a)


def test_tensor_generator_depends_on_seed_and_name():
    draw = lambda g: torch.rand(4, generator=g)  # noqa: E731
    assert torch.equal(draw(tensor_generator(1, "w")), draw(tensor_generator(1, "w")))
    assert not torch.equal(draw(tensor_generator(1, "w")), draw(tensor_generator(2, "w")))
    assert not torch.equal(draw(tensor_generator(1, "w")), draw(tensor_generator(1, "v")))


# ------------------------------------------------------------------------------------------- primitives


def test_magnitude_prune_keeps_the_largest():
    tv = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 1.0, -0.05, 0.4, 3.0])
    out = P.magnitude_prune(tv, 0.3)
    torch.testing.assert_close(out, torch.tensor([0, -5.0, 0, 2.0, 0, 0, 0, 0, 0, 3.0]))
    assert P.magnitude_prune(tv, 1.0) is tv
    assert int((P.magnitude_prune(tv, 0.01) != 0).sum()) == 1  # at least one entry stays
    assert P.magnitude_prune(torch.randn(8, 25), 0.2).count_nonzero() == 40


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_largest_is_exact_over_any_chunking(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5003, generator=g, dtype=dtype).abs()
    x[:40] = 0.0  # zeros and exact ties at a cut: same value as topk's
    x[100:130] = float(x[200])
    for k in (1, 7, 2500, 4963, 4964, 5003):
        want = float(torch.topk(x, k).values.min())
        for size in (5003, 1000, 17):
            assert P.kth_largest(lambda s=size: x.split(s), k) == want, (k, size)
    with pytest.raises(ValueError, match="fewer than"):
        P.kth_largest(lambda: [x], 5004)


def test_magnitude_prune_keeps_every_entry_tied_with_the_last_one_kept():
    tv = torch.tensor([3.0, -1.0, 1.0, 0.5, 1.0])
    # 2 of 5 asked for; |-1| and |1| tie with the 2nd largest: all three stay, the result depends on values only
    torch.testing.assert_close(P.magnitude_prune(tv, 0.4), torch.tensor([3.0, -1.0, 1.0, 0.0, 1.0]))


def test_random_drop_keeps_about_density_and_rescales():
    tv = torch.randn(200, 500)
    out = P.random_drop(tv, 0.3, rescale=True, generator=torch.Generator().manual_seed(0))
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.01
    torch.testing.assert_close(out[kept], tv[kept] / 0.3)
    plain = P.random_drop(tv, 0.3, rescale=False, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain, out * 0.3)
    assert P.random_drop(tv, 1.0) is tv


def test_breadcrumbs_mask_drops_outliers_and_small_entries():
    tv = torch.arange(1.0, 101.0) * torch.where(torch.arange(100) % 2 == 0, 1.0, -1.0)
    mask = P.breadcrumbs_mask(tv, density=0.5, gamma=0.1)
    kept = tv[mask].abs().sort().values
    torch.testing.assert_close(kept, torch.arange(41.0, 91.0))  # drop |v| in 91..100 and 1..40
    assert P.breadcrumbs_mask(tv, 1.0, 0.0).all()
    with pytest.raises(ValueError, match="density \\+ gamma"):
        P.breadcrumbs_mask(tv, 0.95, 0.1)


def test_della_drop_prefers_large_magnitudes_and_is_unbiased():
    tv = torch.randn(64, 400)
    trials = torch.stack(
        [P.della_drop(tv, 0.5, 0.3, generator=torch.Generator().manual_seed(s)) for s in range(50)]
    )
    kept = (trials != 0).float().mean(0)
    assert abs(kept.mean().item() - 0.5) < 0.01  # the mean keep probability is density
    order = tv.abs().argsort(dim=1)
    small, large = kept.gather(1, order[:, :40]).mean(), kept.gather(1, order[:, -40:]).mean()
    assert small < 0.25 and large > 0.75  # keep probability 0.2 for the smallest .. 0.8 for the largest
    # each kept entry is divided by its keep probability 0.2 + 0.6 * rank / (m - 1): unbiased
    p = 0.2 + 0.6 * tv.abs().argsort(dim=1).argsort(dim=1).float() / 399
    torch.testing.assert_close(trials, tv * (trials != 0) / p, atol=ATOL, rtol=1e-6)
    assert abs((trials / tv).mean().item() - 1) < 0.02
    one = P.della_drop(torch.randn(5), 0.5, 0.3, rescale=False, generator=torch.Generator().manual_seed(0))
    assert one.shape == (5,)


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("ties", {"density": 0.0}, "density"),
        ("ties", {"density": 1.5}, "density"),
        ("ties", {"scale": 0.0}, "scale"),
        ("task_arithmetic", {"scale": float("inf")}, "scale"),
        ("ties", {"sign_method": "vote"}, "sign_method"),
        ("dare_linear", {"density": -0.1}, "density"),
        ("breadcrumbs", {"density": 0.95, "gamma": 0.1}, "density \\+ gamma"),
        ("della", {"density": 0.9, "epsilon": 0.2}, "epsilon"),
        ("della", {"density": 0.1, "epsilon": 0.1}, "epsilon"),
        ("slerp", {"t": 1.5}, "'t'"),
        ("linear", {"lambda": 1.0}, "unknown parameter 'lambda'; choose from \\[normalize\\]"),
        ("ties", {"k": 0.2}, "unknown parameter 'k'"),
    ],
)
def test_invalid_params_are_config_errors(name, params, match):
    method = MERGE_METHODS.get(name)
    with pytest.raises(ConfigError, match=match):
        method.params(params)
    with pytest.raises(ValidationError):
        method.Params(**params)
    base, models = _models(2)
    with pytest.raises(ConfigError):
        method.merge(models, base, params, None)


def test_params_of_another_method_are_refused():
    base, models = _models()
    with pytest.raises(ConfigError, match="expects TiesParams, got LinearParams"):
        _merge("ties", models, base, MERGE_METHODS.get("linear").Params())


@pytest.mark.parametrize(
    ("name", "weights", "match"),
    [
        ("linear", [1.0, 1.0], "got 2 weights for 3 models"),
        ("ties", [1.0, float("nan"), 1.0], "finite"),
        ("linear", [1.0, float("inf"), 1.0], "finite"),
        ("ties", [1.0, -1.0, 1.0], ">= 0"),
        ("linear", [1.0, -1.0, 1.0], ">= 0"),
        ("dare_linear", [1.0, -0.5, 1.0], ">= 0"),
        ("model_stock", [1.0, 1.0, 1.0], "takes no per-model weights"),
        ("linear", [0.0, 0.0, 0.0], "sum to 0"),
        ("task_arithmetic", [1.0, -1.0, 0.0], "sum to 0"),  # only with normalize (below)
    ],
)
def test_invalid_weights(name, weights, match):
    base, models = _models()
    params = {"normalize": True} if name == "task_arithmetic" else None
    with pytest.raises(ConfigError, match=match):
        _merge(name, models, base, params, weights)


def test_negative_weights_are_allowed_for_task_arithmetic_only():
    base, models = _models()
    out = _merge("task_arithmetic", models, base, None, [1.0, -1.0, 0.5])
    assert torch.isfinite(out).all()
    for name in ALL:
        method = MERGE_METHODS.get(name)
        assert method.negative_weights == (name == "task_arithmetic")


def test_number_of_models_and_base():
    base, models = _models(3)
    with pytest.raises(ConfigError, match="'slerp' needs exactly 2 models, got 3"):
        _merge("slerp", models, None)
    with pytest.raises(ConfigError, match="'slerp' takes no per-model weights"):
        _merge("slerp", models[:2], None, None, [0.5, 0.5])
    with pytest.raises(ConfigError, match="'model_stock' needs at least 2 models, got 1"):
        _merge("model_stock", models[:1], base)
    with pytest.raises(ConfigError, match="'linear' needs at least 1 model, got 0"):
        _merge("linear", [], None)
    for name in [
        "task_arithmetic",
        "ties",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "della",
        "model_stock",
    ]:
        assert MERGE_METHODS.get(name).needs_base
        with pytest.raises(ConfigError, match="needs the base"):
            _merge(name, models, None)
    # methods without a base ignore one
    torch.testing.assert_close(_merge("linear", models, base), _merge("linear", models, None))


@pytest.mark.parametrize("name", ["linear", "ties", "slerp"])
def test_bad_tensors_are_mtfuse_errors(name):
    base, models = _models(2)
    bad = models[1].clone()
    bad[0, 0] = float("nan")
    bad[1, 1] = float("inf")
    with pytest.raises(MtfuseError, match="model 1 has non-finite values \\(1 NaN, 1 inf\\)"):
        _merge(name, [models[0], bad], base)
    with pytest.raises(MtfuseError, match="shape mismatch: model 0 has \\(8, 25\\), model 1 has \\(25, 8\\)"):
        _merge(name, [models[0], models[1].T.contiguous()], base)
    with pytest.raises(MtfuseError, match="torch.int64"):
        _merge(name, [m.long() for m in models], base)
    if MERGE_METHODS.get(name).needs_base:
        with pytest.raises(MtfuseError, match="the base model has non-finite values"):
            _merge(name, models, torch.full_like(base, float("-inf")))


def test_all_finite_agrees_with_the_elementwise_test() -> None:
    """The one-reduction fast path of the input check: any NaN / inf is found, and finite tensors whose sum
    overflows (float32 near its maximum, float16) are not refused."""
    from mtfuse.fusion.merge.method import all_finite

    g = torch.Generator().manual_seed(0)
    cases = [torch.randn(50, 7, generator=g), torch.full((10,), 3.0e38), torch.full((4096,), 60000.0).half()]
    cases.append(torch.full((8,), 3.0e38).bfloat16())
    cases.append(torch.tensor([3.0e38, -3.0e38, 3.0e38, 3.0e38]))  # the sum overflows to inf: still finite
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = torch.randn(30, generator=g)
        t[17] = bad
        cases.append(t)
    both = torch.randn(30, generator=g)
    both[3], both[4] = float("inf"), float("-inf")  # sum NaN
    cases.append(both)
    cases.append(torch.empty(0))
    for t in cases:
        assert all_finite(t) == bool(torch.isfinite(t).all()), t
    assert all_finite(torch.full((10,), 3.0e38)) and not all_finite(both)


# ------------------------------------------------------------------------------------- parity with peft
#
# peft's merge functions take TASK tensors (tau_i, no base) and a weight tensor, and return the merged DELTA:
# no base added, no lambda. So mtfuse(models, base, scale=l) is compared with base + l * peft(taus, w).
# Conventions that differ (tested below with the matching settings):
# - peft's TIES elects the sign on the UNWEIGHTED trimmed taus and then averages the WEIGHTED taus over the
#   COUNT of agreeing models: sum_i w_i m_i tau_i / sum_i m_i. mtfuse elects on the weighted taus and takes
#   the weighted mean sum_i w_i m_i tau_i / sum_i w_i m_i (as mergekit). Equal for equal weights (peft with
#   weights 1); for other weights the primitives are compared instead.
# - peft's magnitude pruning keeps int(density * n) entries (0 possible), mtfuse round(density * n) and at
#   least 1: the same here, where density * n is an integer.
# - DARE: both draw the mask with torch.bernoulli(full(density)) in float32, model after model, then divide
#   by density, so with the same seed (peft: torch.manual_seed; mtfuse: a Generator seeded alike) the masks
#   and the results are identical.


@pytest.fixture(scope="module")
def peft_mu():
    return pytest.importorskip("peft.utils.merge_utils")


def _taus(n: int = 3, seed: int = 0):
    base, models = _models(n, seed=seed)
    return base, models, [m - base for m in models]


def test_peft_magnitude_pruning(peft_mu):
    _, _, taus = _taus()
    for density in (0.2, 0.5, 0.75):
        for tau in taus:
            torch.testing.assert_close(
                P.magnitude_prune(tau, density), peft_mu.prune(tau, density, "magnitude"), atol=0, rtol=0
            )


@pytest.mark.parametrize(("ours", "theirs"), [("sum", "total"), ("count", "frequency")])
def test_peft_sign_consensus_and_disjoint_merge(peft_mu, ours, theirs):
    _, _, taus = _taus(4)
    trimmed = [P.magnitude_prune(t, 0.5) for t in taus]  # zeros: entries that agree with no sign
    signs = P.sign_consensus(trimmed, None, ours)
    mask = peft_mu.calculate_majority_sign_mask(torch.stack(trimmed), method=theirs)
    assert torch.equal(torch.stack([torch.sign(t) == signs for t in trimmed]), mask)
    w = [0.5, 1.0, 2.0, 0.3]
    weighted = [wi * t for wi, t in zip(w, trimmed, strict=True)]
    # peft's disjoint_merge divides by the count of agreeing models = ours with equal weights
    theirs_merged = peft_mu.disjoint_merge(torch.stack(weighted), mask)
    torch.testing.assert_close(P.disjoint_merge(weighted, None, signs), theirs_merged, atol=ATOL, rtol=0)


def test_peft_task_arithmetic_and_magnitude_prune(peft_mu):
    base, models, taus = _taus()
    w = [0.5, 1.0, 2.0]
    ours = _merge("task_arithmetic", models, base, {"scale": 0.6}, w)
    theirs = base + 0.6 * peft_mu.task_arithmetic(taus, torch.tensor(w))
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    # peft's magnitude_prune method = TIES' trim without sign election: our primitives composed
    pruned = P.combine([P.magnitude_prune(t, 0.3) for t in taus], w)
    torch.testing.assert_close(pruned, peft_mu.magnitude_prune(taus, torch.tensor(w), 0.3), atol=ATOL, rtol=0)


@pytest.mark.parametrize(("ours", "theirs"), [("sum", "total"), ("count", "frequency")])
@pytest.mark.parametrize("density", [0.2, 0.5])
def test_peft_ties(peft_mu, ours, theirs, density):
    base, models, taus = _taus(4)
    out = _merge("ties", models, base, {"density": density, "sign_method": ours, "scale": 1.3}, None)
    delta = peft_mu.ties(taus, torch.ones(4), density, majority_sign_method=theirs)
    torch.testing.assert_close(out, base + 1.3 * delta, atol=ATOL, rtol=0)


@pytest.mark.parametrize("density", [0.3, 0.7])
def test_peft_dare(peft_mu, density):
    base, models, taus = _taus()
    w = [0.5, 1.0, 2.0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        lin = peft_mu.dare_linear(taus, torch.tensor(w), density)
        torch.manual_seed(11)
        ties = peft_mu.dare_ties(taus, torch.ones(3), density, "total")
        torch.manual_seed(11)
        pruned = peft_mu.prune(taus[0], density, "random", rescale=True)
    ours_lin = _merge("dare_linear", models, base, {"density": density}, w, seed=11)
    torch.testing.assert_close(ours_lin, base + lin, atol=ATOL, rtol=0)
    ours_ties = _merge("dare_ties", models, base, {"density": density, "scale": 0.5}, None, seed=11)
    torch.testing.assert_close(ours_ties, base + 0.5 * ties, atol=ATOL, rtol=0)
    ours_pruned = P.random_drop(taus[0], density, True, torch.Generator().manual_seed(11))
    torch.testing.assert_close(ours_pruned, pruned, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------- parity with mergekit
#
# mergekit's generalized task arithmetic (ties, breadcrumbs, dare_*, della, task_arithmetic) uses the same
# conventions as mtfuse: sign elected on the weighted task vectors, weighted mean over agreeing models when
# normalize is true, lambda = our ``scale``. Differences:
# - mergekit's ``rescale`` for DARE / DELLA rescales each sparsified task vector to its original L1 norm;
#   mtfuse divides each kept entry by its keep probability (the papers' 1/p). So the random methods are
#   compared with rescale off, then the masks and both rescalings separately.
# - counts truncate (int(density * n)) where mtfuse rounds (the same here).
# - model_stock: mtfuse clamps cos < 0 to 0, mergekit does not (compared on task vectors with cos > 0).
# - slerp: mergekit's t = 0 end is the base input, mtfuse's is tensors[0] (no base).


@pytest.fixture(scope="module")
def mergekit_merge():
    pytest.importorskip("mergekit.merge_methods")
    from mergekit.merge_methods import merge_tensors

    return merge_tensors


W = [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("name", "ours", "theirs"),
    [
        ("ties", {"density": 0.2, "scale": 0.7}, {"density": 0.2, "lambda": 0.7}),
        ("ties", {"density": 0.5, "normalize": False}, {"density": 0.5, "normalize": False}),
        (
            "breadcrumbs",
            {"density": 0.8, "gamma": 0.05, "scale": 0.7},
            {"density": 0.8, "gamma": 0.05, "lambda": 0.7},
        ),
        ("breadcrumbs", {"density": 0.5, "gamma": 0.0}, {"density": 0.5, "gamma": 0.0}),
        ("task_arithmetic", {"scale": 0.7}, {"lambda": 0.7}),
    ],
)
def test_mergekit_task_arithmetic_family(mergekit_merge, name, ours, theirs):
    base, models = _models()
    expected = mergekit_merge([base, *models], name, parameters={"weight": W, **theirs}, base_index=0)
    torch.testing.assert_close(_merge(name, models, base, ours, W), expected, atol=ATOL, rtol=0)


def test_mergekit_ties_with_count_consensus(mergekit_merge):
    # mergekit registers no "count" variant of ties; build its generalized task arithmetic with count
    from mergekit.merge_methods import GeneralizedTaskArithmeticMerge
    from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod
    from mergekit.sparsify import SparsificationMethod

    ties_count = GeneralizedTaskArithmeticMerge(
        consensus_method=ConsensusMethod.count,
        sparsification_method=SparsificationMethod.magnitude,
        default_normalize=True,
        default_rescale=False,
        method_name="ties_count",
        method_pretty_name=None,
        method_reference_url=None,
    )
    base, models = _models()
    expected = mergekit_merge(
        [base, *models], ties_count, parameters={"weight": W, "density": 0.5}, base_index=0
    )
    ours = _merge("ties", models, base, {"density": 0.5, "sign_method": "count"}, W)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("name", "ours", "theirs"),
    [
        ("dare_linear", {"density": 0.4, "rescale": False}, {"density": 0.4, "rescale": False}),
        (
            "dare_ties",
            {"density": 0.4, "rescale": False},
            {"density": 0.4, "rescale": False, "normalize": True},
        ),
        (
            "della",
            {"density": 0.5, "epsilon": 0.2, "rescale": False},
            {"density": 0.5, "epsilon": 0.2, "rescale": False},
        ),
    ],
)
def test_mergekit_random_methods_without_rescale(mergekit_merge, name, ours, theirs):
    # mergekit draws with torch.bernoulli from the global RNG, model after model, like mtfuse's generator
    base, models = _models()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = mergekit_merge([base, *models], name, parameters={"weight": W, **theirs}, base_index=0)
    torch.testing.assert_close(_merge(name, models, base, ours, W, seed=5), expected, atol=ATOL, rtol=0)


def test_mergekit_dare_rescale_convention(mergekit_merge):
    # same kept entries; mtfuse scales them by 1/density, mergekit by the L1-norm ratio of the task vector
    base, (model,) = _models(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        theirs = mergekit_merge(
            [base, model], "dare_linear", parameters={"weight": [1.0], "density": 0.4}, base_index=0
        )
    ours = _merge("dare_linear", [model], base, {"density": 0.4}, None, seed=5)
    d_ours, d_theirs = ours - base, theirs - base
    assert torch.equal(d_ours != 0, d_theirs != 0)
    kept = d_ours != 0
    tau = model - base
    torch.testing.assert_close(d_ours[kept], tau[kept] / 0.4, atol=ATOL, rtol=0)
    l1 = tau.abs().sum() / tau[kept].abs().sum()
    torch.testing.assert_close(d_theirs[kept], tau[kept] * l1, atol=ATOL, rtol=1e-5)


def test_mergekit_linear_slerp_model_stock(mergekit_merge):
    base, models = _models()
    torch.testing.assert_close(
        _merge("linear", models, None, None, W), mergekit_merge(models, "linear", parameters={"weight": W})
    )
    for t in (0.0, 0.3, 1.0):
        expected = mergekit_merge(models[:2], "slerp", parameters={"t": t}, base_index=0)
        torch.testing.assert_close(_merge("slerp", models[:2], None, {"t": t}), expected, atol=ATOL, rtol=0)
    g = torch.Generator().manual_seed(9)
    shared = 0.1 * torch.randn(base.shape, generator=g)  # correlated task vectors: cos > 0
    close = [base + shared + 0.05 * torch.randn(base.shape, generator=g) for _ in range(3)]
    for filter_wise in (False, True):
        expected = mergekit_merge(
            [base, *close], "model_stock", parameters={"filter_wise": filter_wise}, base_index=0
        )
        ours = _merge("model_stock", close, base, {"filter_wise": filter_wise})
        torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
