"""`mtfuse merge`: checks before merging, streaming driver, heads kept, output is a normal run directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtfuse.errors import MtfuseError
from mtfuse.model import MultiTaskModel
from tests.helpers.cli import exit_code as run_cli
from tests.helpers.cli import fails, snapshot
from tests.helpers.fusion import merge


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, shared_data_dir: Path
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge_runs")
    cfg = root / "c.yaml"
    cfg.write_text(
        f"data_dir: {shared_data_dir}\ncache_dir: {root / 'cache'}\nmodel: {{name_or_path: {tiny_model_dir}}}\n"
        "tasks:\n"
        "  - {name: cola, type: classification, data: {format: glue, task: CoLA, path: '{data_dir}/glue/CoLA'}}\n"
        "  - {name: stsb, type: regression, data: {format: glue, task: STS-B, path: '{data_dir}/glue/STS-B'}}\n"
        "subset: {train: 32, eval: 16}\n"
        "train: {max_steps: 3, batch_size: 8, lr: 1.0e-3, progress: false, tensorboard: false}\n"
    )
    out = {}
    for t in ("cola", "stsb"):
        assert run_cli(["train", str(cfg), f"only_tasks=[{t}]", "--output", str(root / t)]) == 0
        out[t] = root / t
    return out


def encoder(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_merge_keeps_heads_and_evaluates(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    assert (
        run_cli(
            [
                "merge",
                str(runs["cola"]),
                str(runs["stsb"]),
                "--method",
                "ties",
                "density=0.5",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    model, tok = MultiTaskModel.load(out / "model")
    assert sorted(model.specs) == ["cola", "stsb"]
    heads = load_file(str(out / "model" / "heads.safetensors"))
    for t in ("cola", "stsb"):
        for k, v in load_file(str(runs[t] / "model" / "heads.safetensors")).items():
            assert torch.equal(heads[k], v)  # heads are kept, never merged
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"cola", "stsb"}
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "ties" and record["params"]["density"] == 0.5
    assert all(0 < d < 0.5 for d in record["distance_to_base"].values())
    assert json.loads((out / "results.json").read_text())["kind"] == "merged"


def test_linear_average_is_the_mean_and_one_model_is_unchanged(runs: dict[str, Path], tmp_path: Path) -> None:
    merge([runs["cola"], runs["stsb"]], "linear", tmp_path / "avg")
    a, b, m = encoder(runs["cola"]), encoder(runs["stsb"]), encoder(tmp_path / "avg")
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(m[k], (a[k] + b[k]) / 2)
    merge([runs["cola"]], "task_arithmetic", tmp_path / "one", params={"scale": 1.0})
    one = encoder(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(one[k], a[k], atol=1e-6, rtol=0)


def test_duplicate_task_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MtfuseError, match="task 'cola' is in both"):
        merge([runs["cola"], runs["cola"]], "linear", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_tokenizer_mismatch_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(runs["stsb"], other)
    tj = other / "model" / "tokenizer.json"
    spec = json.loads(tj.read_text())
    vocab = spec["model"]["vocab"]
    vocab["zzzznew"] = vocab.pop("[unused0]")  # same size, one token different
    tj.write_text(json.dumps(spec))
    with pytest.raises(MtfuseError, match="tokenizer vocabulary differs"):
        merge([runs["cola"], other], "linear", tmp_path / "x")


def test_architecture_and_shape_mismatch_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(runs["stsb"], other)
    cfg = json.loads((other / "model" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (other / "model" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MtfuseError, match="num_hidden_layers"):
        merge([runs["cola"], other], "linear", tmp_path / "x")


def test_distant_input_and_non_finite_weights_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    far = tmp_path / "far"
    shutil.copytree(runs["stsb"], far)
    w = encoder(far)
    w = {k: (v + 1.0 if v.is_floating_point() else v) for k, v in w.items()}
    save_file(w, str(far / "model" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MtfuseError, match="away from the base"):
        merge([runs["cola"], far], "task_arithmetic", tmp_path / "x")
    bad = encoder(far)
    first = next(k for k, v in bad.items() if v.is_floating_point())
    bad[first][0] = float("nan")
    save_file(bad, str(far / "model" / "model.safetensors"), metadata={"format": "pt"})
    for method in ("linear", "ties"):  # the whole-tensor path and the row-block path
        with pytest.raises(MtfuseError, match=f"tensor '{first}'.*non-finite"):
            merge([runs["cola"], far], method, tmp_path / "y")


def test_cli_errors_are_one_line(runs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    assert (
        run_cli(
            ["merge", str(runs["cola"]), str(runs["stsb"]), "--method", "nope", "-o", str(tmp_path / "a")]
        )
        == 2
    )
    assert "unknown merge method 'nope'" in capfd.readouterr().err
    assert (
        run_cli(
            [
                "merge",
                str(runs["cola"]),
                str(runs["stsb"]),
                "--method",
                "ties",
                "bogus=1",
                "-o",
                str(tmp_path / "a"),
            ]
        )
        == 2
    )
    assert "unknown parameter 'bogus'" in capfd.readouterr().err
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("mine")
    assert run_cli(["merge", str(runs["cola"]), "--method", "linear", "-o", str(tmp_path / "exists")]) == 2
    assert (tmp_path / "exists" / "keep.txt").read_text() == "mine"


def test_runs_with_a_sharing_architecture_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "soft"
    shutil.copytree(runs["stsb"], other)
    (other / "model" / "sharing.json").write_text('{"format_version": 1, "method": "soft", "params": {}}')
    with pytest.raises(MtfuseError, match="sharing method 'soft'.*hard-shared runs only"):
        merge([runs["cola"], other], "linear", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_overwrite_never_replaces_a_training_run(runs: dict[str, Path], tmp_path: Path) -> None:
    """Issue 15: `merge --overwrite --output DIR` where DIR is a training run deleted the run. Only an
    earlier merge output may be replaced."""
    victim = tmp_path / "victim"
    shutil.copytree(runs["stsb"], victim)
    before = snapshot(victim)
    fails(
        ["merge", runs["cola"], "--method", "linear", "-o", victim, "--overwrite"],
        "holds an output of `mtfuse train`",
    )
    assert snapshot(victim) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".victim.")]  # no partial output
    with pytest.raises(MtfuseError, match="holds an output of `mtfuse train`"):
        merge([runs["cola"]], "linear", victim, overwrite=True)
    assert snapshot(victim) == before
    # an earlier merge output is replaced (with --overwrite only), and says who wrote it
    out = tmp_path / "merged"
    merge([runs["cola"]], "linear", out)
    assert json.loads((out / ".mtfuse.json").read_text())["command"] == "merge"
    with pytest.raises(MtfuseError, match="already holds an output of `mtfuse merge`; pass --overwrite"):
        merge([runs["cola"]], "linear", out)
    record = merge([runs["cola"], runs["stsb"]], "linear", out, overwrite=True)
    assert json.loads((out / "merge.json").read_text())["inputs"] == record["inputs"]


def test_squared_distance_is_the_float64_value_chunk_by_chunk() -> None:
    """The distance check's ||x - y||^2: chunked through a small buffer (boundaries not aligned), in any
    floating dtype, within float32 rounding of the float64 value; None gives ||x||^2."""
    from mtfuse.fusion.merge.driver import squared_distance

    g = torch.Generator().manual_seed(0)
    x = torch.randn(301, 7, generator=g)
    y = x + 0.01 * torch.randn(301, 7, generator=g)
    want = float(((x.double() - y.double()) ** 2).sum())
    for buf in (None, torch.empty(64), torch.empty(1000)):
        assert abs(squared_distance(x, y, buf) - want) <= 1e-5 * want
    wx = float((x.double() ** 2).sum())
    assert abs(squared_distance(x, None, torch.empty(50)) - wx) <= 1e-5 * wx
    xb, yb = x.bfloat16(), y.bfloat16()
    want_b = float(((xb.double() - yb.double()) ** 2).sum())
    assert abs(squared_distance(xb, yb, torch.empty(64)) - want_b) <= 1e-5 * want_b
    assert squared_distance(torch.empty(0), torch.empty(0)) == 0.0


@pytest.mark.parametrize("method", ["ties", "task_arithmetic", "linear", "breadcrumbs", "breadcrumbs_ties"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_elementwise_methods_merged_in_row_blocks_equal_the_whole_tensor_merge(
    method: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``merge_blocks`` (what ``merge_state`` does for elementwise methods: TIES' thresholds streamed chunk by
    chunk, then the maths row block by row block) gives the whole-tensor result bit for bit, for matrices,
    vectors and scalars, with block and chunk sizes that split rows unevenly."""
    from mtfuse.fusion.merge import MERGE_METHODS, driver

    m = MERGE_METHODS.get(method)
    p = m.params(
        {"density": 0.3, "gamma": 0.1}
        if "breadcrumbs" in method
        else {"density": 0.3}
        if method == "ties"
        else {}
    )
    monkeypatch.setattr(driver, "BLOCK", 3 * 13 * 4)  # 4 rows of 13 per block with 3 inputs
    monkeypatch.setattr(driver, "CHUNK", 50)
    g = torch.Generator().manual_seed(1)
    weights = [1.0, 0.5, 2.0]
    for shape in [(37, 13), (101,), (5, 2, 3), ()]:
        base = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        tensors = [
            (base.double() + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
            for _ in weights
        ]
        whole = m.merge(tensors, base, p, weights)
        blocks = driver.merge_blocks(m, p, tensors, base, weights)
        assert blocks.dtype == whole.dtype and blocks.shape == whole.shape
        assert torch.equal(blocks, whole), (shape, dtype)
