"""The run directory the serving benchmarks use: the packaged MiniLM (all-MiniLM-L6-v2) trained for a few
steps (`mtfuse train`) on two synthetic tasks, a sentence classification (`sent`, field `text`) and a pair
classification (`pair`, fields `a`, `b`). Built once under benchmarks/runs/ (git-ignored) and reused."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORDS = "good bad film plot actor London Paris great dull scene story city quiet long sea music".split()


def sentence(rng: random.Random, n: int = 10) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def rows(rng: random.Random, kind: str, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        s = sentence(rng)
        if kind == "sent":
            out.append(
                {"text": s, "label": "pos" if s.count("good") + s.count("great") > s.count("bad") else "neg"}
            )
        else:
            t = sentence(rng)
            out.append({"a": s, "b": t, "label": "same" if s.split()[0] == t.split()[0] else "other"})
    return out


def build_run(work: Path, steps: int = 20) -> Path:
    run = work / "serve-minilm"
    if (run / "model" / "heads.json").is_file():
        return run
    rng = random.Random(0)
    tasks = []
    for kind, fields in (("sent", ["text"]), ("pair", ["a", "b"])):
        files = {}
        for split, n in (("train", 256), ("dev", 200)):
            p = work / "data" / kind / f"{split}.jsonl"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("".join(json.dumps(r) + "\n" for r in rows(rng, kind, n)), encoding="utf-8")
            files[split] = str(p)
        tt = "classification" if kind == "sent" else "pair_classification"
        data = {"format": "jsonl", "files": files}
        tasks.append(
            {
                "name": kind,
                "type": tt,
                "data": data,
                "text_fields": fields,
                "label_field": "label",
                "max_length": 64,
            }
        )
    cfg = {
        "tasks": tasks,
        "model": {"name_or_path": "default"},
        "cache_dir": str(work / "cache"),
        "train": {"batch_size": 16, "max_steps": steps, "lr": 5e-5, "tensorboard": False, "progress": False},
    }
    (work / "serve.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    cmd = [sys.executable, "-m", "mtfuse.cli", "train", str(work / "serve.yaml"), "--output", str(run)]
    subprocess.run(cmd, check=True, env={"PYTHONPATH": str(ROOT / "src"), **_env()})
    return run


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
