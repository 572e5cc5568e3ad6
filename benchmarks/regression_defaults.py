"""Issue 15 §5: do the new defaults (pooling from the checkpoint, standardised regression targets) stop short
runs of regression from collapsing to the mean?

Trains the packaged MiniLM on STS-B for a short run (60 steps of 16 on a seeded 1,000-example train subset,
scored on the whole dev split) with:
  * ``new-default``: today's defaults (mean pooling for this checkpoint, standardised targets);
  * ``new-pooler``: today's code with ``model.pooling=pooler`` (standardised targets only);
  * ``old-default`` (with ``--baseline-src DIR``): the code before the change, from another checkout's ``src``
    (pooler pooling, raw targets), e.g. ``git worktree add /tmp/old 180e6fb`` then ``--baseline-src /tmp/old/src``.

    python benchmarks/regression_defaults.py --baseline-src /tmp/old/src --seeds 1

Writes benchmarks/results/regression_defaults-cpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """\
data_dir: {data}
tasks:
  - {{name: stsb, type: regression, data: {{format: glue, task: STS-B, path: "{{data_dir}}/glue/STS-B"}}}}
train: {{batch_size: 16, max_steps: 60, lr: 5.0e-5, eval_every: 60, tensorboard: false, progress: false, seed: {seed}}}
subset: {{train: 1000, seed: 0}}
"""


def run(arm: str, src: Path | None, overrides: list[str], seed: int, work: Path, data: Path) -> dict:
    cfg = work / f"{arm}-{seed}.yaml"
    cfg.write_text(CONFIG.format(data=data, seed=seed), encoding="utf-8")
    out = work / f"{arm}-{seed}"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [
        sys.executable,
        "-m",
        "mtfuse.cli",
        "train",
        str(cfg),
        "--output",
        str(out),
        f"cache_dir={work / ('cache-' + arm)}",
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{arm}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())["tasks"]["stsb"]
    secs = json.loads((out / "results.json").read_text())["cost"]["train_seconds"]
    return {"arm": arm, "seed": seed, **metrics, "train_seconds": secs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    arms = [("new-default", None, []), ("new-pooler", None, ["model.pooling=pooler"])]
    if args.baseline_src:
        arms.insert(0, ("old-default", args.baseline_src, []))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for arm, src, ov in arms:
                rows.append(run(arm, src, ov, seed, Path(tmp), args.data))
                print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "benchmarks" / "results" / "regression_defaults-cpu.json"
    out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    print("\n| arm | seed | pearson | spearman | train s |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arm']} | {r['seed']} | {r['pearson']:.1f} | {r['spearman']:.1f} | {r['train_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
