"""Merge speed and peak memory: ``mtfuse merge`` vs mergekit on the same merge of the same models.

The models: N encoders saved from seeded random perturbations of the packaged MiniLM (all-MiniLM-L6-v2,
22.7 M parameters, 87 MB in float32): each tensor plus Gaussian noise of ``--noise`` x its own std, saved as
an mtfuse run directory (``model/`` = Hugging Face ``save_pretrained`` layout + one classification head).
The merge: TIES (density 0.5, lambda 1, sign by sum, mean over agreeing models) and linear (uniform average)
of N = 2, 4, 8 (``--inputs``, e.g. 2,4,8,16) inputs onto the MiniLM base, float32, on the CPU; also task
arithmetic (lambda 1) and Model Breadcrumbs (density 0.9, gamma 0.01, lambda 1) with ``--methods``. Memory is
also given as a multiple of one model's size (``*_merge_anon_x_model``).

mergekit's CLI (``mergekit-yaml``, 0.1.5) cannot merge these BERT encoders: planning crashes with
``TypeError: can only concatenate list (not "tuple") to list`` (``plan.py``, the optional
``embeddings.position_ids`` weight of its ``bert.json`` architecture has aliases as a tuple). The benchmark
runs it once per invocation and records the error. mergekit is therefore measured through its tensor-level
API, over the same safetensors files: ``safetensors.torch.load_file`` of the base and the N inputs,
``mergekit.merge_methods.merge_state_dicts`` (the same merge method objects its CLI runs), ``save_file`` of
the result. mtfuse is measured through ``mtfuse.fusion.merge.driver.merge_runs`` (what ``mtfuse merge`` runs:
checks, streaming one tensor name at a time, heads, run directory), and end to end as the ``mtfuse merge``
command (interpreter start-up and imports included).

Each measurement runs in its own fresh subprocess, with ``--threads`` torch intra-op threads (default 1:
the 2 CPU cores here are shared with other jobs, and with 2 threads the OpenMP hand-offs of small tensor
ops dominate and vary from run to run for both tools). Time: wall clock around the merge call (after
imports); for the CLI row, around the whole command. Memory, two figures, both from ``/proc/<pid>/status``:

- ``RssAnon``, sampled every 2 ms by a thread (no kernel high-water mark exists for it): the process's
  private resident memory. ``merge_anon_mb`` = its peak during the merge - its value just before: what the
  merge itself held (tensors read, merged model, temporaries). The headline memory figure.
- ``VmHWM``, the kernel's resident-set high-water mark of the whole process (interpreter, torch, merge). It
  also counts file-backed pages of memory-mapped files: both paths read the safetensors through mmap
  (mtfuse with ``safe_open``; ``load_file`` returns mmap-backed tensors), so every input page touched
  counts although it is page cache, not memory the process owns. Reported as ``peak_rss_mb`` /
  ``merge_rss_mb`` for completeness.

For the CLI row: ``ru_maxrss`` of the child (``wait4``) and its ``RssAnon`` sampled by the parent. Both tools
read files from the page cache (every input is read once before the first measurement). The outputs are
compared tensor by tensor (``max_abs_diff``, ``entries_differing`` = entries further apart than 1e-6):
linear agrees exactly; TIES differs only where task-vector entries tie in magnitude at the trim cut
(mtfuse keeps every entry tied with the cut, mergekit's ``torch.argsort`` keeps some by index; with an odd
number of entries, mtfuse keeps round(0.5 n) and mergekit int(0.5 n), none here).

    .venv/bin/python benchmarks/merge_bench.py                      # N = 2, 4, 8; ties and linear
    .venv/bin/python benchmarks/merge_bench.py --inputs 2,4 --methods ties --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
METHODS = {  # the same merge in both tools' vocabulary
    "ties": (
        {"density": 0.5, "scale": 1.0},
        {"weight": 1.0, "density": 0.5, "lambda": 1.0, "normalize": True},
    ),
    "linear": ({}, {"weight": 1.0, "normalize": True}),
    "task_arithmetic": ({"scale": 1.0}, {"weight": 1.0, "lambda": 1.0}),
    "breadcrumbs": (
        {"density": 0.9, "gamma": 0.01, "scale": 1.0},
        {"weight": 1.0, "density": 0.9, "gamma": 0.01, "lambda": 1.0},
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", default="2,4,8", help="numbers of input models, comma separated")
    p.add_argument("--methods", default="ties,linear", help=f"from {sorted(METHODS)}")
    p.add_argument("--repeats", type=int, default=1, help="measure each this many times (alternating order)")
    p.add_argument(
        "--noise", type=float, default=0.01, help="perturbation std, relative to each tensor's std"
    )
    p.add_argument("--no-cli", action="store_true", help="skip the end-to-end `mtfuse merge` rows")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both tools")
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "runs" / "merge_bench")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "merge_bench-cpu.json")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- models


def make_runs(work: Path, n: int, noise: float) -> tuple[Path, list[Path]]:
    """N run directories whose encoders are seeded perturbations of the packaged MiniLM (made once)."""
    import torch
    from safetensors.torch import load_file, save_file

    from mtfuse.model import HeadSpec, MultiTaskModel, resolve_model_path

    base = Path(resolve_model_path("default"))
    state = load_file(str(base / "model.safetensors"))
    runs = []
    for i in range(n):
        run = work / "inputs" / f"run{i}"
        model_dir = run / "model"
        runs.append(run)
        if (model_dir / "heads.json").is_file():
            continue
        model_dir.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(1000 + i)
        out = {}
        for k, v in state.items():
            if v.is_floating_point():
                std = float(v.float().std()) if v.numel() > 1 else 1.0
                v = v + noise * std * torch.randn(v.shape, generator=g, dtype=v.dtype)
            out[k] = v.contiguous()
        save_file(out, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
        shutil.copy2(base / "config.json", model_dir / "config.json")
        for f in TOKENIZER_FILES:
            if (base / f).is_file():
                shutil.copy2(base / f, model_dir / f)
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(str(base))
        spec = HeadSpec(f"task{i}", "classification", "classification", 2, "pooler", 0.1, ["a", "b"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(i)
            model = MultiTaskModel.build(encoder, {spec.task: spec})
        tensors = model.heads_state_dict()
        save_file(tensors, str(model_dir / "heads.safetensors"), metadata={"format": "pt"})
        (model_dir / "heads.json").write_text(
            json.dumps({"format_version": 1, "heads": [spec.to_dict()]}) + "\n"
        )
    return base, runs


# ------------------------------------------------------------------------------------------ measurement


def _status_mb(pid: int | str, field: str) -> float | None:
    """A memory field of /proc/<pid>/status (VmHWM, RssAnon...) in MB; None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class AnonPeak:
    """Samples RssAnon (private resident memory) of a process every ``interval`` s; keeps the maximum.

    VmHWM also counts file-backed pages of memory-mapped files (safetensors are read through mmap), which are
    page cache, not memory the process owns; RssAnon has no kernel high-water mark, hence the sampling."""

    def __init__(self, pid: int | str = "self", interval: float = 0.002) -> None:
        import threading

        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            v = _status_mb(self.pid, "RssAnon")
            if v is None and self.pid != "self":
                return  # the process is gone
            self.peak = max(self.peak, v or 0.0)
            time.sleep(self.interval)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_in_process(
    tool: str, method: str, base: str, runs: list[str], out: str, threads: int
) -> dict[str, Any]:
    """Run in a fresh subprocess: import, then time one merge and read the memory high-water marks."""
    import torch

    torch.set_num_threads(threads)
    if tool == "mtfuse":
        from mtfuse.fusion.merge.driver import merge_runs
        from mtfuse.fusion.merge.request import MergeRequest

        ours, _ = METHODS[method]
        anon0, hwm0 = _status_mb("self", "RssAnon") or 0.0, _status_mb("self", "VmHWM") or 0.0
        with AnonPeak() as peak:
            t0 = time.perf_counter()
            request = MergeRequest(runs=[Path(r) for r in runs], method=method, params=dict(ours), base=base)
            merge_runs(request, Path(out), overwrite=True)
            seconds = time.perf_counter() - t0
    else:
        from mergekit.merge_methods import merge_state_dicts
        from safetensors.torch import load_file, save_file

        _, theirs = METHODS[method]
        uses_base = method != "linear"  # linear: the base is not an input of the average
        anon0, hwm0 = _status_mb("self", "RssAnon") or 0.0, _status_mb("self", "VmHWM") or 0.0
        with AnonPeak() as peak:
            t0 = time.perf_counter()
            models = {"base": load_file(str(Path(base) / "model.safetensors"))} if uses_base else {}
            for i, r in enumerate(runs):
                models[f"m{i}"] = load_file(str(Path(r) / "model" / "model.safetensors"))
            with torch.no_grad():
                merged = merge_state_dicts(
                    models, method, parameters=theirs, base="base" if uses_base else None, strict=True
                )
            Path(out).mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in merged.items()}, str(Path(out) / "model.safetensors"))
            seconds = time.perf_counter() - t0
    hwm = _status_mb("self", "VmHWM") or 0.0
    return {
        "seconds": round(seconds, 3),
        "peak_anon_mb": round(peak.peak, 1),
        "merge_anon_mb": round(peak.peak - anon0, 1),
        "peak_rss_mb": round(hwm, 1),
        "merge_rss_mb": round(hwm - hwm0, 1),
    }


def _subprocess_measure(
    tool: str, method: str, base: Path, runs: list[Path], out: Path, threads: int
) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    args = json.dumps({"tool": tool, "method": method, "base": str(base), "runs": [str(r) for r in runs],
                       "out": str(out), "threads": threads})  # fmt: skip
    proc = subprocess.run(
        [sys.executable, __file__, "_measure", args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cli_measure(method: str, base: Path, runs: list[Path], out: Path, threads: int) -> dict[str, Any]:
    """`mtfuse merge` end to end in a child process: wall time, its ru_maxrss (wait4), sampled RssAnon."""
    shutil.rmtree(out, ignore_errors=True)
    ours, _ = METHODS[method]
    cmd = [str(Path(sys.executable).parent / "mtfuse"), "merge", *map(str, runs), "--method", method]
    cmd += [f"{k}={v}" for k, v in ours.items()] + ["--base", str(base), "-o", str(out), "--no-evaluate"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    with AnonPeak(proc.pid) as peak:
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(
            f"mtfuse merge failed: {proc.stderr.read().decode()[-3000:] if proc.stderr else ''}"
        )
    return {
        "seconds": round(seconds, 3),
        "peak_anon_mb": round(peak.peak, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def try_mergekit_cli(base: Path, runs: list[Path], work: Path) -> dict[str, Any]:
    """Run `mergekit-yaml` on the same TIES merge once; record whether it works (it crashes on BERT)."""
    import yaml

    cfg = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [{"model": str(r / "model"), "parameters": {"weight": 1.0, "density": 0.5}} for r in runs],
        "parameters": {"normalize": True},
        "dtype": "float32",
    }
    path = work / "mergekit-ties.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = work / "out-mergekit-cli"
    shutil.rmtree(out, ignore_errors=True)
    exe = str(Path(sys.executable).parent / "mergekit-yaml")
    t0 = time.perf_counter()
    proc = subprocess.run([exe, str(path), str(out), "--quiet"], capture_output=True, text=True, check=False)
    last = [ln for ln in proc.stderr.strip().splitlines() if ln and not ln.startswith(" ")][-1:]
    return {
        "command": f"mergekit-yaml {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} OUT",
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - t0, 3),
        "error": last[0] if proc.returncode != 0 and last else None,
    }


def compare(a: Path, b: Path) -> dict[str, float | int]:
    """Largest absolute difference and number of entries further apart than 1e-6, over all tensors."""
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if set(x) != set(y):
        raise RuntimeError(f"different tensor names: {sorted(set(x) ^ set(y))[:3]}")
    diffs = [(x[k].double() - y[k].double()).abs() for k in x if x[k].numel()]
    return {
        "max_abs_diff": max(float(d.max()) for d in diffs),
        "entries_differing": sum(int((d > 1e-6).sum()) for d in diffs),
        "tensors_differing": sum(int(bool((d > 1e-6).any())) for d in diffs),
    }


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ns = [int(x) for x in args.inputs.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {sorted(METHODS)}")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    t_make = time.perf_counter()
    base, all_runs = make_runs(work, max(ns), args.noise)
    print(f"{max(ns)} input runs ready in {time.perf_counter() - t_make:.1f} s under {work}")
    for r in [base / "model.safetensors", *(r / "model" / "model.safetensors" for r in all_runs)]:
        r.read_bytes()  # into the page cache: both tools start warm

    model_mb = (base / "model.safetensors").stat().st_size / 2**20  # one model: the yardstick of memory
    cli = try_mergekit_cli(base, all_runs[:2], work)
    print(f"mergekit-yaml on 2 BERT encoders: returncode {cli['returncode']} {cli['error'] or ''}")

    rows = []
    for method in methods:
        for n in ns:
            runs = all_runs[:n]
            res: dict[str, list[dict[str, Any]]] = {"mtfuse": [], "mergekit_api": [], "mtfuse_cli": []}
            for rep in range(args.repeats):
                order = ["mtfuse", "mergekit_api"] if rep % 2 == 0 else ["mergekit_api", "mtfuse"]
                for tool in order:
                    kind = "mtfuse" if tool == "mtfuse" else "mergekit"
                    out = work / f"out-{tool}"
                    res[tool].append(_subprocess_measure(kind, method, base, runs, out, args.threads))
                if not args.no_cli:
                    out = work / "out-mtfuse_cli"
                    res["mtfuse_cli"].append(_cli_measure(method, base, runs, out, args.threads))
            same = compare(work / "out-mtfuse" / "model", work / "out-mergekit_api")
            diff = same["max_abs_diff"]
            row: dict[str, Any] = {"method": method, "inputs": n, **same}
            for tool, ms in res.items():
                if ms:
                    row[tool] = {k: round(statistics.median(m[k] for m in ms), 3) for k in ms[0]}
            a, b = row["mtfuse"], row["mergekit_api"]
            row["ratio_time"] = round(a["seconds"] / b["seconds"], 3)
            row["ratio_merge_anon"] = round(a["merge_anon_mb"] / max(b["merge_anon_mb"], 1e-9), 3)
            row["ratio_peak_anon"] = round(a["peak_anon_mb"] / max(b["peak_anon_mb"], 1e-9), 3)
            row["ratio_peak_rss"] = round(a["peak_rss_mb"] / max(b["peak_rss_mb"], 1e-9), 3)
            row["mtfuse_merge_anon_x_model"] = round(a["merge_anon_mb"] / model_mb, 3)
            row["mergekit_merge_anon_x_model"] = round(b["merge_anon_mb"] / model_mb, 3)
            rows.append(row)
            cli_s = f"; `mtfuse merge` {row['mtfuse_cli']['seconds']:.1f} s" if "mtfuse_cli" in row else ""
            print(
                f"{method:6s} N={n}: time mtfuse {a['seconds']:.2f} s, mergekit {b['seconds']:.2f} s "
                f"(x{row['ratio_time']:.2f}); merge memory mtfuse +{a['merge_anon_mb']:.0f} MB, mergekit "
                f"+{b['merge_anon_mb']:.0f} MB (x{row['ratio_merge_anon']:.2f}; mtfuse "
                f"{row['mtfuse_merge_anon_x_model']:.2f} x one model); max |diff| {diff:.1e} "
                f"({same['entries_differing']} entries){cli_s}"
            )

    import mergekit
    import torch

    import mtfuse

    result = {
        "benchmark": "merge_bench",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/merge_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
        },
        "versions": {
            "mtfuse": getattr(mtfuse, "__version__", None),
            "mergekit": getattr(mergekit, "__version__", "0.1.5"),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "setup": {
            "model": "packaged all-MiniLM-L6-v2 (BertModel, 22.7 M parameters, float32)",
            "model_mb": round(model_mb, 1),
            "noise": args.noise,
            "repeats": args.repeats,
            "methods": {m: {"mtfuse": METHODS[m][0], "mergekit": METHODS[m][1]} for m in methods},
            "memory": (
                "a fresh subprocess per measurement. peak_anon_mb: maximum of RssAnon (private resident "
                "memory) sampled every 2 ms; merge_anon_mb: that minus RssAnon just before the merge call. "
                "peak_rss_mb: VmHWM (kernel RSS high-water mark; includes file-backed pages of mmapped "
                "safetensors, i.e. page cache); merge_rss_mb: VmHWM after - VmHWM before the merge. CLI row: "
                "ru_maxrss of the child (wait4) and its RssAnon sampled from the parent"
            ),
            "time": "wall clock around the merge call after imports; CLI row: the whole command",
        },
        "mergekit_cli": cli,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_measure":
        a = json.loads(sys.argv[2])
        print(
            json.dumps(
                measure_in_process(a["tool"], a["method"], a["base"], a["runs"], a["out"], a["threads"])
            )
        )
        sys.exit(0)
    sys.exit(main())
