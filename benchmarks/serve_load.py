"""Load test of `mtfuse serve` on the loopback address: throughput, latency percentiles, errors and the
server's resident memory, with and without dynamic batching.

The server: `mtfuse serve RUN --host 127.0.0.1` in a subprocess, on the run of ``_serve_run.py`` (the packaged
MiniLM, two classification tasks, max length 64), torch backend unless ``--backend``. The client: httpx async
in this process, ``concurrency`` requests in flight at a time, each ``POST /v1/predict`` of one sentence of 10
words (``sent`` task), bounded by ``--requests`` per setting and ``--time-limit`` seconds per setting.
Modes: ``batching`` (``--max-batch 32 --max-wait-ms 5``) and ``no-batching`` (``--max-batch 1``: one request
per model call); the server runs with ``--threads 1`` (the shared cores). Memory: the server's RSS (``/proc/<pid>/status`` VmRSS) after a warm-up, and after the
``--rss-requests`` requests of the memory phase (batching mode, concurrency 64), sampled after each tenth of
them (``rss_trace_mb``): a leak grows with every tenth, allocator warm-up levels off.

Client and server share the machine's cores (2 here, shared with other jobs), so figures are a floor.

    .venv/bin/python benchmarks/serve_load.py                   # 300 requests per setting, 2000 for memory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _serve_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODES = {"batching": ["--max-batch", "32", "--max-wait-ms", "5"], "no-batching": ["--max-batch", "1"]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, mode: str, backend: str, threads: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "mtfuse.cli", "serve", str(run), "--host", "127.0.0.1", "--port", str(port)]
    cmd += [
        *MODES[mode],
        "--max-queue",
        "1024",
        "--backend",
        backend,
        "--device",
        "cpu",
        "--threads",
        threads,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(base + "/ready", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not become ready")


async def load(base: str, n: int, concurrency: int, time_limit: float, seed: int) -> dict:
    rng = random.Random(seed)
    bodies = [{"task": "sent", "inputs": [_serve_run.sentence(rng)]} for _ in range(n)]
    latencies: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    deadline = time.monotonic() + time_limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                r = await client.post(base + "/v1/predict", json=body)
                code = str(r.status_code)
            except httpx.HTTPError as e:
                code = type(e).__name__
            latencies.append(time.perf_counter() - t0)
            statuses[code] = statuses.get(code, 0) + 1
            if code != "200":
                errors += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "errors": errors,
        "statuses": statuses,
        "stopped_by_time_limit": len(latencies) < n,
    }


def batch_sizes(base: str) -> dict:
    text = httpx.get(base + "/metrics").text
    vals = {}
    for line in text.splitlines():
        for key in ("mtfuse_batch_size_sum", "mtfuse_batch_size_count"):
            if line.startswith(key + " "):
                vals[key] = float(line.split()[1])
    calls = vals.get("mtfuse_batch_size_count", 0)
    return {
        "model_calls": int(calls),
        "mean_rows_per_call": round(vals.get("mtfuse_batch_size_sum", 0) / max(calls, 1), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="run directory to serve (default: build the MiniLM one)")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "serve")
    ap.add_argument("--requests", type=int, default=300, help="requests per (mode, concurrency)")
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds per (mode, concurrency)")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--rss-requests", type=int, default=2000, help="requests of the memory phase")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--threads", type=int, default=1, help="the server's --threads (1: the cores are shared)")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load-cpu.json")
    args = ap.parse_args()
    run = args.run or _serve_run.build_run(args.work_dir)
    levels = [int(c) for c in args.concurrency.split(",")]
    result: dict = {
        "what": "mtfuse serve load test on 127.0.0.1 (httpx async client in the same machine)",
        "run": str(run),
        "model": "all-MiniLM-L6-v2 (packaged), 2 classification heads, max_length 64",
        "request": "POST /v1/predict, task 'sent', one 10-word sentence",
        "backend": args.backend,
        "server_threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "modes": {},
    }
    for mode in MODES:
        proc, base = start_server(run, mode, args.backend, str(args.threads))
        try:
            asyncio.run(load(base, 30, 4, 30, seed=99))  # warm-up
            rows = []
            for c in levels:
                before = batch_sizes(base)
                r = asyncio.run(load(base, args.requests, c, args.time_limit, seed=c))
                after = batch_sizes(base)
                calls = after["model_calls"] - before["model_calls"]
                r["model_calls"] = calls
                r["mean_requests_per_model_call"] = round(r["requests"] / max(calls, 1), 2)
                rows.append(r)
                print(mode, json.dumps(r), flush=True)
            entry: dict = {"server_flags": MODES[mode], "levels": rows}
            if mode == "batching" and args.rss_requests:
                # in 10 chunks, RSS after each: a leak grows with every chunk, allocator warm-up levels off
                rss0, trace, done, errors, secs = rss_mb(proc.pid), [], 0, 0, 0.0
                statuses: dict[str, int] = {}
                chunk = max(1, args.rss_requests // 10)
                while done < args.rss_requests:
                    n = min(chunk, args.rss_requests - done)
                    mem = asyncio.run(load(base, n, 64, 600, seed=7 + done))
                    done, errors, secs = done + mem["requests"], errors + mem["errors"], secs + mem["seconds"]
                    for k, v in mem["statuses"].items():
                        statuses[k] = statuses.get(k, 0) + v
                    trace.append([done, round(rss_mb(proc.pid), 1)])
                half = trace[len(trace) // 2 - 1][1] if len(trace) > 1 else rss0
                rss1 = trace[-1][1]
                entry["memory"] = {
                    "requests": done,
                    "errors": errors,
                    "statuses": statuses,
                    "throughput_rps": round(done / secs, 1) if secs else None,
                    "rss_before_mb": round(rss0, 1),
                    "rss_after_mb": round(rss1, 1),
                    "rss_growth_mb": round(rss1 - rss0, 1),
                    "rss_growth_second_half_mb": round(rss1 - half, 1),
                    "rss_trace_mb": trace,  # [requests so far, RSS]
                }
                print(mode, "memory", json.dumps(entry["memory"]), flush=True)
            result["modes"][mode] = entry
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
