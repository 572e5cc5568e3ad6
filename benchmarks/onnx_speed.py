"""CPU latency and throughput of torch vs onnxruntime fp32 vs onnxruntime int8 on the same model and inputs,
and the int8 model's agreement with fp32 and dev scores.

The model: the run of ``_serve_run.py`` (the packaged MiniLM, tasks ``sent`` and ``pair``, max length 64),
exported with ``mtfuse export --format onnx --quantize int8`` into a copy beside it. Timed: the model call
alone (``forward_all`` of both heads on a tokenised batch; torch under ``no_grad``; ``OnnxModel.forward_all``
for onnxruntime), at batch 1 and 32, for ``--seconds`` per setting after 3 warm-up calls, with ``--threads``
intra-op threads (default 1: the cores here are shared with other jobs). Scores: every dev example of both
tasks through ``Predictor(backend=...)`` (accuracy), and the share of examples where int8 and fp32 agree.

    .venv/bin/python benchmarks/onnx_speed.py
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _serve_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, seconds: float) -> dict:
    for _ in range(3):
        fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {
        "calls": len(times),
        "p50_ms": round(float(np.median(ms)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "serve")
    ap.add_argument("--seconds", type=float, default=8.0, help="timing per (backend, batch size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "onnx_speed-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mtfuse.export import OnnxModel, export_command
    from mtfuse.predict import Predictor

    run = _serve_run.build_run(args.work_dir)
    onnx_dir = run / "onnx"
    if not (onnx_dir / "export.json").is_file() or not (onnx_dir / "model.int8.onnx").is_file():
        shutil.rmtree(onnx_dir, ignore_errors=True)
        t0 = time.perf_counter()
        export_command(run, "onnx", "int8", None, False)
        print(f"exported in {time.perf_counter() - t0:.1f} s")
    meta = json.loads((onnx_dir / "export.json").read_text())
    torch_p = Predictor(run, device="cpu")
    models = {
        "torch": torch_p.model,
        "onnxruntime_fp32": OnnxModel(onnx_dir),
        "onnxruntime_int8": OnnxModel(onnx_dir, int8=True),
    }
    tok = torch_p.tokenizer
    rng = __import__("random").Random(0)
    result: dict = {
        "what": "model call latency on the CPU (forward_all of 2 heads), batch 1 and 32, max_length 64",
        "model": "all-MiniLM-L6-v2 (packaged), tasks sent (classification), pair (pair classification)",
        "threads": args.threads,
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
        "export": {k: meta[k] for k in ("opset", "exporter", "export_seconds", "parity_max_abs_diff")},
        "file_mb": {
            "fp32": round((onnx_dir / "model.onnx").stat().st_size / 2**20, 1),
            "int8": round((onnx_dir / "model.int8.onnx").stat().st_size / 2**20, 1),
        },
        "speed": {},
    }
    for bs in (1, 32):
        texts = [_serve_run.sentence(rng) for _ in range(bs)]
        batch = dict(tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt"))
        row = {}
        for name, model in models.items():

            def call(model=model, batch=batch) -> None:
                with torch.no_grad():
                    model.forward_all(batch, ["sent", "pair"])

            r = timed(call, args.seconds)
            r["throughput_examples_per_s"] = round(bs * 1000 / r["mean_ms"], 1)
            row[name] = r
            print(bs, name, r, flush=True)
        result["speed"][f"batch_{bs}"] = row

    # dev scores and agreement
    scores: dict = {}
    preds: dict = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        p = torch_p if backend == "torch" else Predictor(run, backend=backend)
        for task in ("sent", "pair"):
            dev = [
                json.loads(x) for x in (args.work_dir / "data" / task / "dev.jsonl").read_text().splitlines()
            ]
            recs = p.predict_rows(task, [{k: v for k, v in r.items() if k != "label"} for r in dev])
            labels = [r["label"] for r in recs]
            preds[(backend, task)] = labels
            acc = 100 * float(np.mean([a == r["label"] for a, r in zip(labels, dev, strict=True)]))
            scores.setdefault(backend, {})[task] = round(acc, 2)
    result["dev_accuracy"] = scores
    result["agreement_with_torch_pct"] = {
        b: {
            t: round(100 * float(np.mean(np.array(preds[(b, t)]) == np.array(preds[("torch", t)]))), 2)
            for t in ("sent", "pair")
        }
        for b in ("onnx", "onnx-int8")
    }
    result["dev_examples"] = {t: len(preds[("torch", t)]) for t in ("sent", "pair")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("dev_accuracy", "agreement_with_torch_pct", "file_mb")}))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
