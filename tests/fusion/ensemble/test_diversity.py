"""Member diversity: pairwise disagreement and error correlation, and `mtfuse diversity`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble.diversity import diversity_command, pairwise
from tests.helpers.fusion import make_ta, two_fake_members


def test_pairwise_disagreement_and_error_correlation() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    onehot = lambda d: np.eye(2)[np.asarray(d)] * 0.8 + 0.1  # noqa: E731
    P = np.stack([onehot([0, 1, 0, 1, 1, 0]), onehot([0, 1, 0, 1, 1, 0]), onehot([1, 0, 0, 1, 0, 1])])
    rec = pairwise(make_ta(P, y))
    assert rec["disagreement"][0][1] == 0.0 and rec["disagreement"][0][2] == pytest.approx(4 / 6)
    assert rec["error_correlation"][0][1] == pytest.approx(1.0)
    e0, e2 = np.array([0, 0, 0, 0, 1, 1]), np.array([1, 1, 0, 0, 0, 0])
    assert rec["error_correlation"][0][2] == pytest.approx(np.corrcoef(e0, e2)[0, 1])
    assert rec["error_rate"] == pytest.approx([2 / 6, 2 / 6, 2 / 6])
    perfect = pairwise(make_ta(np.stack([onehot(y), onehot([0, 1, 0, 1, 1, 0])]), y))
    assert perfect["error_correlation"][0][1] is None  # a member that never errs: undefined


def test_diversity_command_prints_and_saves(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    members = two_fake_members(tmp_path)
    buf = StringIO()
    report = diversity_command(members, output=tmp_path / "div.json", console=Console(file=buf, width=120))
    saved = json.loads((tmp_path / "div.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved["tasks"]) == {"a", "r"}
    assert saved["tasks"]["r"]["disagreement_measure"] == "mean absolute difference"
    assert "disagreement above the diagonal, error correlation below it" in buf.getvalue()
    with pytest.raises(MtfuseError, match="already exists"):
        diversity_command(members, output=tmp_path / "div.json")
