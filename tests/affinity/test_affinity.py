"""Task affinity: the optimizer lookahead equals the real step, the TAG ratio, the partition search, the
transfer map, and `mtfuse affinity` end to end on the tiny BERT."""

from __future__ import annotations

import copy
import json
from math import comb, factorial
from pathlib import Path

import numpy as np
import pytest
import torch

from mtfuse.affinity import best_groupings, group_score, lookahead_update, loss_affinity, transfer_map
from mtfuse.affinity.grouping import partitions
from tests.helpers.cli import fails, run_cli


def _model_and_grads(seed: int) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    loss = m(torch.randn(7, 5)).pow(2).sum()
    return m, list(torch.autograd.grad(loss, list(m.parameters())))


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_lookahead_is_the_step_the_optimizer_takes(kind: str) -> None:
    """From a fresh optimizer and after three real steps (moments, momentum and bias correction in play)."""
    model, _ = _model_and_grads(0)
    params = list(model.parameters())

    def make(ps: list) -> torch.optim.Optimizer:
        if kind == "adamw":  # fused, as mtfuse's own optimizer
            return torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1, fused=True)
        return torch.optim.SGD(ps, lr=0.05, momentum=0.9)

    opt = make(params)
    for warm in range(4):
        _, grads = _model_and_grads(10 + warm)
        predicted = lookahead_update(params, grads, opt)
        before = [p.detach().clone() for p in params]
        twin_params = list(copy.deepcopy(model).parameters())
        twin_opt = make(twin_params)
        twin_opt.load_state_dict(opt.state_dict())
        for p, g in zip(twin_params, grads, strict=True):
            p.grad = g.clone()
        twin_opt.step()
        for b, d, p in zip(before, predicted, twin_params, strict=True):
            assert d is not None
            torch.testing.assert_close(b + d, p.detach(), rtol=1e-5, atol=1e-7)
        # the real optimizer then takes that step; its state advances, the lookahead left it alone
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        opt.zero_grad()


def test_lookahead_skips_parameters_without_gradient() -> None:
    model, grads = _model_and_grads(0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    out = lookahead_update(list(model.parameters()), [None, *grads[1:]], opt)
    assert out[0] is None and all(o is not None for o in out[1:])


def test_affinity_ratio() -> None:
    assert loss_affinity(2.0, 1.5) == pytest.approx(0.25)  # j's loss fell by a quarter: i helps j
    assert loss_affinity(2.0, 3.0) == pytest.approx(-0.5)
    assert loss_affinity(0.0, 1.0) == 0.0 and loss_affinity(float("nan"), 1.0) == 0.0


def _stirling2(n: int, k: int) -> int:
    return sum((-1) ** i * comb(k, i) * (k - i) ** n for i in range(k + 1)) // factorial(k)


@pytest.mark.parametrize("n,k", [(1, 1), (4, 2), (5, 3), (6, 1), (7, 4), (8, 3)])
def test_partitions_are_all_distinct_and_complete(n: int, k: int) -> None:
    parts = list(partitions(n, k))
    assert len(parts) == _stirling2(n, k)
    keys = {frozenset(frozenset(g) for g in p) for p in parts}
    assert len(keys) == len(parts)
    for p in parts:
        assert len(p) == k and sorted(i for g in p for i in g) == list(range(n))


def test_group_score_by_hand() -> None:
    Z = np.array([[0.0, 0.2, -0.1], [0.4, 0.0, 0.3], [0.0, -0.2, 0.0]])
    # onto 0: mean(Z[1,0], Z[2,0]) = 0.2; onto 1: mean(0.2, -0.2) = 0; onto 2: mean(-0.1, 0.3) = 0.1
    assert group_score(Z, (0, 1, 2)) == pytest.approx(0.3)
    assert group_score(Z, (0, 1)) == pytest.approx(0.6)
    assert group_score(Z, (2,)) == 0.0


def _blocks(sizes: list[int], inside: float = 0.3, across: float = -0.2, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(sizes)), sizes)
    Z = np.where(labels[:, None] == labels[None, :], inside, across)
    Z = Z + np.random.default_rng(seed).normal(0, 0.02, Z.shape)
    np.fill_diagonal(Z, 0.5)
    return Z


def test_search_recovers_planted_groups_exhaustive_and_greedy() -> None:
    best = best_groupings(_blocks([3, 2, 2]), 3)[0]  # 7 tasks: exhaustive
    assert best.search == "exhaustive"
    assert sorted(best.groups) == [(0, 1, 2), (3, 4), (5, 6)]
    assert best.score == pytest.approx(sum(group_score(_blocks([3, 2, 2]), g) for g in best.groups))
    big = best_groupings(_blocks([4, 3, 3], seed=1), 3)  # 10 tasks: greedy
    assert big[0].search == "greedy" and sorted(big[0].groups) == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    ranked = best_groupings(_blocks([3, 2, 2]), 2, top=5)
    assert [g.score for g in ranked] == sorted((g.score for g in ranked), reverse=True)
    with pytest.raises(ValueError, match="k must be"):
        best_groupings(_blocks([2]), 3)


def test_transfer_map_sorts_helpers_and_harms() -> None:
    Z = np.array([[0.0, 0.1, 0.2], [-0.3, 0.0, 0.05], [0.4, -0.1, 0.0]])
    tm = transfer_map(Z, ["a", "b", "c"])
    assert tm["a"] == {"helped_by": [("c", 0.4)], "hurt_by": [("b", -0.3)]}
    assert tm["c"]["helped_by"] == [("a", 0.2), ("b", 0.05)]


# ------------------------------------------------------------------------------------------ end to end

CONFIG = """
train: {{batch_size: 8, lr: 1.0e-3, progress: false, max_steps: 6}}
tasks:
  - {{name: sst2, type: classification, data: {{format: glue, path: "{{data_dir}}/glue/SST-2"}}}}
  - {{name: sst2_copy, type: classification, data: {{format: glue, path: "{{data_dir}}/glue/SST-2"}}}}
  - {{name: conll, type: token_classification, data: {{format: conll, path: "{{data_dir}}/conll2003"}}}}
subset: {{train: 32, eval: 16}}
"""


def test_affinity_command_end_to_end(cli_config, tmp_path: Path) -> None:
    from mtfuse import config as config_mod

    path, common = cli_config(CONFIG.format())
    out = tmp_path / "aff"
    code, stdout, err = run_cli(["affinity", path, *common, "--output", out, "--steps", "5", "--every", "2"])
    assert code == 0, err
    res = json.loads((out / "affinity.json").read_text())
    assert res["tasks"] == ["sst2", "sst2_copy", "conll"] and res["measured_steps"] == 3
    Z, C = np.array(res["affinity"]), np.array(res["cosine"])
    assert Z.shape == (3, 3) and np.isfinite(Z).all()
    np.testing.assert_allclose(np.diag(C), 1.0, atol=1e-6)
    # the same data under two names: their shared-encoder gradients point the same way; both heads start
    # from different random weights, so the cosine is high but not 1
    assert C[0, 1] > C[0, 2] and C[0, 1] > C[1, 2]
    assert set(res["groupings"]) == {"1", "2", "3"}
    for k, options in res["groupings"].items():
        assert all(len(o["groups"]) == int(k) for o in options)
    # the best grouping for k=2 as ready configs that load
    group_files = sorted((out / "groupings" / "k2").glob("*.yaml"))
    assert len(group_files) == 2
    names = sorted(t.name for f in group_files for t in config_mod.load(f).tasks)
    assert names == ["conll", "sst2", "sst2_copy"]
    assert (out / "affinity.png").stat().st_size > 0 and (out / "cosine.png").stat().st_size > 0
    assert "helped by" in stdout and "k=2" in stdout
    # an existing output is refused (nothing overwritten) unless --overwrite
    before = (out / "affinity.json").read_bytes()
    fails(["affinity", path, *common, "--output", out, "--steps", "1"], "--overwrite")
    assert (out / "affinity.json").read_bytes() == before


def test_affinity_needs_two_tasks(cli_config, tmp_path: Path) -> None:
    lines = CONFIG.format().splitlines(keepends=True)
    one = "".join(x for x in lines if "sst2_copy" not in x and "conll" not in x)
    path, common = cli_config(one)
    fails(["affinity", path, *common, "--output", tmp_path / "a"], "two or more tasks")
