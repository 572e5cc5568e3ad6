"""Does ``torch.compile`` speed up training of the packaged MiniLM? (issue 12 §1's lever, measured).

The Hugging Face ``BertForSequenceClassification`` of the packaged MiniLM trains on the same 30 SST-2 train
batches (32 sentences, each batch padded to its longest, labels seeded), fp32, fused AdamW, clipping 1.0,
once eagerly and once under ``torch.compile`` (``dynamic=True``: dynamic padding gives every batch its own
length; without it each new length recompiles), each in a fresh subprocess, the order alternating per repeat.
Reported: the first steps' time (compilation included) and the median of steps 11-30.

    .venv/bin/python benchmarks/compile_check.py --repeats 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(mode: str, data_dir: Path, steps: int) -> dict[str, object]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mtfuse.model import resolve_model_path

    path = resolve_model_path("default")
    tok = AutoTokenizer.from_pretrained(path)
    rows = (data_dir / "glue" / "SST-2" / "train.tsv").read_text().splitlines()[1:]
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(steps):
        enc = tok([r.split("\t")[0] for r in rows[i * 32 : (i + 1) * 32]], padding=True, truncation=True,
                  max_length=128, return_tensors="pt")  # fmt: skip
        enc["labels"] = torch.randint(0, 2, (32,), generator=g)
        batches.append(enc)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, fused=True)
    fwd = torch.compile(model, dynamic=True) if mode == "compile" else model
    times = []
    for b in batches:
        t0 = time.perf_counter()
        fwd(**b).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"first_steps_s": [round(t, 2) for t in times[:3]], "median_step_s": statistics.median(times[10:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "compile_check-cpu.json")
    p.add_argument("--worker", choices=["eager", "compile"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.data_dir, a.steps)))
        return
    reps = []
    for r in range(a.repeats):
        rep = {}
        for mode in ("eager", "compile") if r % 2 == 0 else ("compile", "eager"):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                mode,
                "--data-dir",
                str(a.data_dir),
                "--steps",
                str(a.steps),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            rep[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            print(mode, rep[mode], flush=True)
        rep["compile_over_eager_step"] = round(
            rep["compile"]["median_step_s"] / rep["eager"]["median_step_s"], 3
        )
        reps.append(rep)
    import torch

    result = {
        "benchmark": "compile_check",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "benchmarks/compile_check.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "median_compile_over_eager_step": statistics.median(r["compile_over_eager_step"] for r in reps),
        "repeats": reps,
    }
    a.output.write_text(json.dumps(result, indent=1) + "\n")
    print("compiled / eager step time:", result["median_compile_over_eager_step"])


if __name__ == "__main__":
    main()
