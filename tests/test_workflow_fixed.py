"""The fixed tiny workflow (train, merge x3, ensemble, stack, compare) gives the figures recorded before the
restructuring of the code (tests/helpers/workflow.py says how they were recorded)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.workflow import REFERENCE, close, run_workflow


def test_workflow_outputs_unchanged(tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path) -> None:
    got = run_workflow(tmp_path / "wf", tiny_model_dir, shared_data_dir)
    want = json.loads(REFERENCE.read_text(encoding="utf-8"))
    diffs = close(got, want)
    assert not diffs, f"{len(diffs)} differences, first: " + "\n".join(diffs[:10])
