"""The merge request: recorded in merge.json (resolved, defaults included) and replayed with `--from`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtfuse.errors import ConfigError
from mtfuse.fusion.merge import MERGE_METHODS
from mtfuse.fusion.merge.request import MergeRequest, read_request
from tests.helpers.cli import fails, run_cli


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = load_file(str(a / "model" / "heads.safetensors"))
    hb = load_file(str(b / "model" / "heads.safetensors"))
    assert ha.keys() == hb.keys() and all(torch.equal(ha[k], hb[k]) for k in ha)


def _cli(*argv: object) -> tuple[int, str, str]:
    return run_cli([str(a) for a in argv])


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("dare_ties", ["density=0.5", "--seed", "3", "--weights", "1,2"]),  # random masks: the seed matters
        ("fisher", ["fisher_examples=3", "--seed", "2"]),  # data-dependent, sampled labels
    ],
)
def test_a_replay_gives_identical_weights(
    runs: dict[str, Path], tmp_path: Path, method: str, args: list
) -> None:
    first, again = tmp_path / "first", tmp_path / "again"
    code, out, err = _cli(
        "merge", runs["sent"], runs["topic"], "--method", method, *args, "-o", first, "--no-evaluate"
    )
    assert code == 0, err
    record = json.loads((first / "merge.json").read_text())
    request = record["request"]
    # resolved: absolute runs, the base used, every parameter of the method (defaults included)
    assert request["runs"] == [str(runs["sent"].resolve()), str(runs["topic"].resolve())]
    assert request["base"] == record["base"] is not None
    assert set(request["params"]) == set(MERGE_METHODS.get(method).Params.model_fields)
    assert request["method"] == method and request["seed"] == record["seed"]
    code, out, err = _cli("merge", "--from", first / "merge.json", "-o", again, "--no-evaluate")
    assert code == 0, err
    _same_weights(first, again)
    assert json.loads((again / "merge.json").read_text())["request"] == request
    # replaying into the recorded directory itself replaces it only with --overwrite
    fails(["merge", "--from", first, "--no-evaluate"], "pass --overwrite")
    assert _cli("merge", "--from", first, "--overwrite", "--no-evaluate")[0] == 0
    _same_weights(first, again)


def test_a_search_is_replayed_as_a_search(runs: dict[str, Path], tmp_path: Path) -> None:
    first, again = tmp_path / "s1", tmp_path / "s2"
    argv = ["merge", runs["sent"], runs["topic"], "--method", "task_arithmetic", "--no-evaluate"]
    assert _cli(*argv, "--search-space", "scale=[0.4,1.0]", "-o", first)[0] == 0
    request = json.loads((first / "merge.json").read_text())["request"]
    assert request["search"] == {"space": {"scale": [0.4, 1.0]}, "split": "dev", "trials": None}
    assert "scale" not in request["params"] and "normalize" in request["params"]  # searched: not fixed
    assert _cli("merge", "--from", first / "merge.json", "-o", again, "--no-evaluate")[0] == 0
    _same_weights(first, again)
    assert (
        json.loads((again / "search.json").read_text())["best"]["point"]
        == json.loads((first / "search.json").read_text())["best"]["point"]
    )


def test_from_refuses_other_arguments_and_bad_records(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "lin"
    assert (
        _cli("merge", runs["sent"], runs["topic"], "--method", "linear", "-o", out, "--no-evaluate")[0] == 0
    )
    fails(["merge", "--from", out, "--method", "ties", "-o", tmp_path / "x"], "drop --method")
    fails(
        ["merge", "--from", tmp_path / "nowhere.json", "-o", tmp_path / "x"], "nowhere.json: file not found"
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"request": {"runs": [], "method": "linear", "colour": 1}}))
    fails(["merge", "--from", bad, "-o", tmp_path / "x"], "unknown field 'colour'", "field 'runs'")
    assert not (tmp_path / "x").exists()
    # an older merge.json (no "request"): rebuilt from the record's fields
    record = json.loads((out / "merge.json").read_text())
    del record["request"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(record))
    assert read_request(old).method == "linear" and len(read_request(old).runs) == 2
    with pytest.raises(ConfigError, match="field 'max_distance'"):
        MergeRequest.make(runs=[out], method="linear", max_distance=-1)
