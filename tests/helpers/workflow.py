"""A fixed tiny workflow whose outputs must not change when the code is restructured.

Two single-task runs (sst2, conll) and one multi-task run (sst2 + conll) on a 2-layer random BERT, then merges
with three methods (linear, ties, fisher), an ensemble, a stack and a comparison. ``fingerprint`` reduces every
weight file, prediction file and metrics file to numbers; ``tests/data/workflow_fingerprint.json`` holds the
figures recorded before the restructuring (``python -m tests.helpers.workflow record``), and
``tests/test_workflow_fixed.py`` checks that today's code gives the same. One entry was re-recorded since, on
purpose: merge-ties' word embeddings, when TIES' trim began keeping every entry tied in |value| with its cut
(two such entries here). The training runs pin ``precision: "no"``: ``auto`` is bf16 on CPUs with native bf16.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from tests.helpers.cli import run_cli

CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"},
     metrics: [accuracy]}
  - {name: conll, type: token_classification, data: {format: conll, path: "{data_dir}/conll2003"},
     metrics: [seqeval_f1]}
model: {pooling: pooler}
train: {batch_size: 8, lr: 1.0e-3, tensorboard: false, progress: false, max_steps: 4, precision: "no"}
subset: {train: 32, eval: 24}
"""

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "workflow_fingerprint.json"


def run_workflow(root: Path, model_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Run the workflow under ``root``; return its fingerprint."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cfg.yaml").write_text(CONFIG, encoding="utf-8")
    common = [f"model.name_or_path={model_dir}", f"data_dir={data_dir}", f"cache_dir={root / 'cache'}"]

    def cli(*argv: object) -> None:
        code, out, err = run_cli(list(argv))
        assert code == 0, f"mtfuse {' '.join(map(str, argv))} failed ({code}):\n{out}\n{err}"

    cfg = root / "cfg.yaml"
    cli("train", cfg, "--output", root / "st-sst2", *common, "only_tasks=[sst2]", "train.seed=1")
    cli("train", cfg, "--output", root / "st-conll", *common, "only_tasks=[conll]", "train.seed=2")
    cli("train", cfg, "--output", root / "mt", *common, "train.seed=3")
    singles = [root / "st-sst2", root / "st-conll"]
    for method in ("linear", "ties", "fisher"):
        cli("merge", *singles, "--method", method, "--output", root / f"merge-{method}")
    cli(
        "ensemble",
        root / "st-sst2",
        root / "mt",
        "--tasks",
        "sst2",
        "--method",
        "weighted_nll",
        "--folds",
        "3",
        "--output",
        root / "ens",
    )
    cli(
        "stack",
        root / "st-conll",
        root / "mt",
        "--tasks",
        "conll",
        "--folds",
        "3",
        "--output",
        root / "stack",
    )
    cli(
        "compare",
        *singles,
        root / "mt",
        root / "merge-ties",
        root / "ens",
        root / "stack",
        "--latency",
        "0",
        "--output",
        root / "cmp",
    )
    return fingerprint(root)


def _weights(path: Path) -> dict[str, list[float]]:
    out = {}
    for name, t in sorted(load_file(str(path)).items()):
        a = t.astype(np.float64).ravel()
        ramp = np.linspace(-1.0, 1.0, a.size) if a.size else a
        out[name] = [float(a.sum()), float(np.abs(a).sum()), float((a * ramp).sum())]
    return out


def fingerprint(root: Path) -> dict[str, Any]:
    fp: dict[str, Any] = {"weights": {}, "predictions": {}, "metrics": {}}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("cache", "cmp")):
        for f in sorted((d / "model").rglob("*.safetensors")) if (d / "model").is_dir() else []:
            fp["weights"][str(f.relative_to(root))] = _weights(f)
        for f in sorted((d / "predictions").glob("*.jsonl")) if (d / "predictions").is_dir() else []:
            rows = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x]
            fp["predictions"][str(f.relative_to(root))] = rows
        if (d / "metrics.json").is_file():
            m = json.loads((d / "metrics.json").read_text())
            fp["metrics"][str((d / "metrics.json").relative_to(root))] = {
                "tasks": m["tasks"],
                "average": m["average"],
            }
    assert (root / "cmp" / "compare.json").is_file()
    return fp


# Floats agree to 2e-6 relative: probabilities are written with 6 decimals, and CPUs whose kernels differ (an
# AMD EPYC against the Intel Xeon the figures were recorded on) round some of them one unit apart. The stack is
# fit by scikit-learn's lbfgs (tol 1e-4), whose solution moves ~5e-3 when its inputs move by those 1e-6: its
# figures agree to 1e-2.
TOLERANCE, STACK_TOLERANCE = 2e-6, 1e-2


def close(a: Any, b: Any, where: str = "") -> list[str]:
    """Differences between two fingerprints (floats to ``TOLERANCE`` relative), as readable lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = [f"{where}/{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            diffs += close(a[k], b[k], f"{where}/{k}")
        return diffs
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in close(x, y, f"{where}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float))
        tol = STACK_TOLERANCE if where.split("/")[2:3] == ["stack"] else TOLERANCE
        if ok and abs(float(a) - float(b)) <= tol * max(1.0, abs(float(a)), abs(float(b))):
            return []
        return [f"{where}: {a} vs {b}"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    import tempfile

    from tests.helpers.tiny import build_tiny_bert

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_bert(Path(tmp) / "tiny")
        data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
        fp = run_workflow(Path(tmp) / "wf", model, data)
    REFERENCE.write_text(json.dumps(fp, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {REFERENCE}")
