"""Data-dependent merge methods: Fisher, RegMean, AdaMerging, greedy soup (pure functions and on tiny runs).

Tiny runs are made by hand, not trained (``tests.helpers.fusion.make_data_runs``: the tiny random BERT of
``conftest.tiny_model_dir``, each run's encoder a seeded perturbation of it (a few % relative L2) and random
heads, with a few rows of jsonl data). That is enough for the invariants and keeps the file fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtfuse.errors import MtfuseError
from mtfuse.evaluate import evaluate_run
from mtfuse.fusion.merge import get_method
from mtfuse.fusion.merge.methods.regmean import scale_off_diagonal
from mtfuse.model import MultiTaskModel
from tests.helpers.fusion import merge


def encoder(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _models(n: int = 3, shape: tuple[int, ...] = (6, 5), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


# ------------------------------------------------------------------------------------ pure functions


def test_fisher_with_equal_fishers_is_the_plain_average() -> None:
    m = get_method("fisher")
    models = _models()
    f = torch.rand(6, 5) + 0.1
    out = m.merge(models, None, None, None, stats=[f, f, f])
    torch.testing.assert_close(out, torch.stack(models).mean(0), atol=1e-6, rtol=0)
    weighted = m.merge(models, None, None, [1.0, 0.0, 3.0], stats=[f, f, f])
    torch.testing.assert_close(weighted, 0.25 * models[0] + 0.75 * models[2], atol=1e-6, rtol=0)
    # no information anywhere (F = 0, no floor): the plain mean; one model: itself
    zero = m.merge(models, None, {"floor": 0.0}, None, stats=[torch.zeros(6, 5)] * 3)
    torch.testing.assert_close(zero, torch.stack(models).mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(m.merge(models[:1], None, None, None, stats=[f]), models[0])
    # a model with all the Fisher mass wins its entries
    big = m.merge(models[:2], None, {"floor": 0.0}, None, stats=[torch.ones(6, 5), torch.zeros(6, 5)])
    torch.testing.assert_close(big, models[0])


def test_regmean_is_the_least_squares_solution() -> None:
    m = get_method("regmean")
    g = torch.Generator().manual_seed(1)
    n_in, n_out = 5, 3
    xs = [torch.randn(20 + 5 * i, n_in, generator=g, dtype=torch.float64) for i in range(3)]
    ws = [torch.randn(n_out, n_in, generator=g, dtype=torch.float64) for _ in range(3)]  # HF layout [out, in]
    grams = [x.T @ x for x in xs]
    out = m.merge(ws, None, {"alpha": 1.0}, None, stats=grams)
    # brute force: argmin_W sum_i ||X_i W^T - X_i W_i^T||^2 by least squares on the stacked rows
    x_all = torch.cat(xs)
    y_all = torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    expect = torch.linalg.lstsq(x_all, y_all).solution.T
    torch.testing.assert_close(out, expect, atol=1e-8, rtol=1e-8)
    # alpha scales the off-diagonal only; one model: itself; biases (no Gram): the mean
    assert torch.equal(torch.diagonal(scale_off_diagonal(grams[0], 0.3)), torch.diagonal(grams[0]))
    torch.testing.assert_close(m.merge(ws[:1], None, {"alpha": 0.5}, None, stats=grams[:1]), ws[0])
    b = _models(2, (4,))
    torch.testing.assert_close(m.merge(b, None, None, None), (b[0] + b[1]) / 2)
    # a singular system (an input feature nobody uses) keeps the mean there instead of 0
    dead = [gm.clone() for gm in grams]
    for gm in dead:
        gm[0, :] = 0
        gm[:, 0] = 0
    out = m.merge(ws, None, {"alpha": 1.0}, None, stats=dead)
    torch.testing.assert_close(out[:, 0], torch.stack(ws).mean(0)[:, 0], atol=1e-6, rtol=0)


def test_adamerging_and_soup_apply_their_coefficients() -> None:
    base, a, b = _models(3)
    ada = get_method("adamerging").merge(
        [a, b], base, None, None, stats=[torch.tensor(0.3), torch.tensor(0.5)]
    )
    torch.testing.assert_close(ada, base + 0.3 * (a - base) + 0.5 * (b - base))
    soup = get_method("greedy_soup").merge(
        [a, b, base], None, None, None, stats=[torch.tensor(x) for x in (1.0, 0.0, 1.0)]
    )
    torch.testing.assert_close(soup, (a + base) / 2)


# ---------------------------------------------------------------------------------------- tiny runs


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("fisher", {"fisher_examples": 4}),
        ("regmean", {"gram_examples": 4}),
        ("adamerging", {"steps": 2}),
        ("greedy_soup", {}),
    ],
)
def test_one_input_is_returned(runs: dict[str, Path], tmp_path: Path, method: str, params: dict) -> None:
    rec = merge([runs["sent"]], method, tmp_path / "one", params)
    a, out = encoder(runs["sent"]), encoder(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(out[k], a[k], atol=1e-5, rtol=1e-5)
    assert rec["stats"]["kind"] == get_method(method).needs_stats  # type: ignore[attr-defined]


def test_fisher_and_regmean_merge_runs_of_different_tasks(runs: dict[str, Path], tmp_path: Path) -> None:
    pair = [runs["sent"], runs["score"]]
    fis = merge(pair, "fisher", tmp_path / "f", {"fisher_examples": 4, "label": "sampled"}, seed=3)
    assert fis["stats"]["examples"] == {str(runs["sent"]): 4, str(runs["score"]): 4}
    reg = merge(pair, "regmean", tmp_path / "r", {"gram_examples": 6, "alpha": 0.9})
    assert reg["stats"]["tokens"][str(runs["sent"])] > 6
    a, b = encoder(runs["sent"]), encoder(runs["score"])
    f, r = encoder(tmp_path / "f"), encoder(tmp_path / "r")
    q = "encoder.layer.0.attention.self.query.weight"
    lo, hi = torch.minimum(a[q], b[q]), torch.maximum(a[q], b[q])
    assert bool(((f[q] >= lo - 1e-6) & (f[q] <= hi + 1e-6)).all())  # Fisher: a convex combination per entry
    assert not torch.allclose(r[q], (a[q] + b[q]) / 2)  # RegMean: not the plain mean on Linear weights
    bias = "encoder.layer.0.attention.self.query.bias"
    torch.testing.assert_close(r[bias], (a[bias] + b[bias]) / 2)  # biases: the mean
    model, _ = MultiTaskModel.load(tmp_path / "r" / "model")
    assert sorted(model.specs) == ["score", "sent"]  # heads kept
    # the data is the runs' own: a run without config.yaml cannot give statistics
    (runs["score"] / "config.yaml").rename(runs["score"] / "config.bak")
    try:
        with pytest.raises(MtfuseError, match="no config.yaml"):
            merge(pair, "fisher", tmp_path / "x", {"fisher_examples": 2})
    finally:
        (runs["score"] / "config.bak").rename(runs["score"] / "config.yaml")


def test_adamerging_entropy_decreases(runs: dict[str, Path], tmp_path: Path) -> None:
    # examples <= batch_size: every step sees the same inputs, so the curve is the objective itself
    params = {"steps": 6, "lr": 0.05, "examples": 8, "batch_size": 8, "granularity": "layer"}
    rec = merge([runs["sent"], runs["topic"], runs["score"]], "adamerging", tmp_path / "ada", params)
    curve = rec["stats"]["entropy"]
    assert len(curve) == 7 and curve[-1] < curve[0]
    lambdas = rec["stats"]["lambdas"][str(runs["sent"])]
    assert set(lambdas) == {"embeddings", "encoder.layer.0", "encoder.layer.1", "pooler"}
    assert all(0.0 <= v <= 1.0 for v in lambdas.values())
    assert rec["stats"]["tasks_probed"] == ["sent", "topic"]  # regression has no entropy
    task_wise = merge(
        [runs["sent"], runs["topic"]],
        "adamerging",
        tmp_path / "tw",
        {**params, "granularity": "task", "steps": 1},
    )
    assert list(task_wise["stats"]["lambdas"][str(runs["topic"])]) == ["all"]


def test_greedy_soup_is_never_worse_than_its_best_ingredient(runs: dict[str, Path], tmp_path: Path) -> None:
    ingredients = [runs["sent"], runs["sent_b"], runs["sent_c"]]
    with pytest.raises(MtfuseError, match="task 'sent' is in both"):  # other methods still refuse this
        merge(ingredients, "linear", tmp_path / "lin")
    rec = merge(ingredients, "greedy_soup", tmp_path / "soup")
    info = rec["stats"]
    best_single = max(info["ingredient_scores"].values())
    assert info["soup_score"]["average"] >= best_single
    assert info["order"][0] == max(info["ingredient_scores"], key=info["ingredient_scores"].get)
    assert rec["heads"] == {"sent": info["order"][0]}  # one head: the best run's
    heads = load_file(str(tmp_path / "soup" / "model" / "heads.safetensors"))
    best_heads = load_file(str(Path(info["order"][0]) / "model" / "heads.safetensors"))
    assert heads.keys() == best_heads.keys() and all(torch.equal(heads[k], best_heads[k]) for k in heads)
    # the written soup is exactly the one that was scored
    result, _ = evaluate_run(tmp_path / "soup", "dev", [], tmp_path / "m.json")
    assert result["average"] == pytest.approx(info["soup_score"]["average"], abs=1e-9)
    kept = [Path(p) for p in info["soup"]]
    mean = {k: torch.stack([encoder(p)[k] for p in kept]).mean(0) for k in encoder(kept[0])}
    soup = encoder(tmp_path / "soup")
    for k, v in mean.items():
        if v.is_floating_point():
            torch.testing.assert_close(soup[k], v, atol=1e-6, rtol=0)
