"""Shared builders of the fusion tests (ensembles, stacks, merges) and of the comparison tests.

Ensembles: hand-written run directories (heads.json + metrics.json + predictions, no model: :func:`fake_run`),
synthetic aligned arrays (:func:`make_ta`, :func:`noisy_members`) and tiny real runs trained once per session
(:func:`trained_runs`). Merges: tiny runs made by hand, not trained (:func:`make_data_runs`: the tiny random
BERT, each run's encoder a seeded perturbation of it, random heads, a few rows of jsonl data), and
:func:`merge` / :func:`search`, which build the merge request the driver takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel

from mtfuse.fusion.ensemble.members import TaskArrays
from mtfuse.fusion.merge.driver import merge_runs
from mtfuse.fusion.merge.request import MergeRequest, SearchSpec
from mtfuse.fusion.merge.search import search_merge
from mtfuse.model import HeadSpec, MultiTaskModel
from mtfuse.tasks.types import TASK_TYPES

# ---------------------------------------------------------------------------------------- ensembles

SMALL_CONFIG = """\
data_dir: .
tasks:
  - {name: sst2, type: classification, data: {format: glue, task: SST-2, path: "{data_dir}/glue/SST-2"},
     metrics: [accuracy]}
  - {name: stsb, type: regression, data: {format: glue, task: STS-B, path: "{data_dir}/glue/STS-B"},
     metrics: [pearson, spearman]}
  - {name: conll, type: token_classification, data: {format: conll, path: "{data_dir}/conll2003"},
     metrics: [seqeval_f1]}
train: {batch_size: 8, lr: 1.0e-3, tensorboard: false}
"""

_TRAINED: dict[str, dict[str, Path]] = {}


def trained_runs(root: Path, tiny_model_dir: Path, shared_data_dir: Path) -> dict[str, Path]:
    """Three tiny real runs, trained once per session: two multi-task runs (sst2, stsb, conll; seeds 1, 2)
    and a single-task sst2 run (seed 3). Same dev subset, so they can be ensembled."""
    key = str(root)
    if key in _TRAINED:
        return _TRAINED[key]
    from mtfuse.cli import main

    root.mkdir(parents=True, exist_ok=True)
    (root / "mt.yaml").write_text(SMALL_CONFIG, encoding="utf-8")
    single = (
        SMALL_CONFIG.split("  - {name: stsb")[0] + "train: {batch_size: 8, lr: 1.0e-3, tensorboard: false}\n"
    )
    (root / "st.yaml").write_text(single, encoding="utf-8")
    common = [
        f"model.name_or_path={tiny_model_dir}",
        f"data_dir={shared_data_dir}",
        f"cache_dir={root / 'cache'}",
        "subset.train=16",
        "subset.eval=24",
        "train.max_steps=2",
        "train.progress=false",
    ]
    runs = {"mt1": ("mt.yaml", 1), "mt2": ("mt.yaml", 2), "st": ("st.yaml", 3)}
    out = {}
    for name, (cfg, seed) in runs.items():
        try:
            main(["train", str(root / cfg), "--output", str(root / name), *common, f"train.seed={seed}"])
        except SystemExit as e:
            assert not e.code, f"training {name} failed"
        out[name] = root / name
    _TRAINED[key] = out
    return out


def fake_run(path: Path, tasks: dict[str, dict[str, Any]], params: int = 1000) -> Path:
    """A run directory without a model: heads.json, metrics.json, results.json and predictions.

    ``tasks[name]``: ``type``, ``labels`` (None for regression), ``metrics``, ``records`` (the rows)."""
    (path / "model").mkdir(parents=True)
    (path / "predictions").mkdir()
    heads = [{"task": n, "task_type": t["type"], "labels": t.get("labels")} for n, t in tasks.items()]
    (path / "model" / "heads.json").write_text(json.dumps({"format_version": 1, "heads": heads}))
    metrics = {
        "split": "dev",
        "tasks": {n: {m: 0.0 for m in t["metrics"]} for n, t in tasks.items()},
        "average": 0,
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    kind = "multi-task" if len(tasks) > 1 else "single-task"
    cost = {"parameters": params, "train_seconds": 2.0, "peak_memory_mb": 100.0}
    (path / "results.json").write_text(json.dumps({"kind": kind, "metrics": metrics, "cost": cost}))
    for n, t in tasks.items():
        with open(path / "predictions" / f"{n}.jsonl", "w", encoding="utf-8") as f:
            for r in t["records"]:
                f.write(json.dumps(r) + "\n")
    return path


def cls_records(p1: np.ndarray, gold: np.ndarray, labels: tuple[str, str] = ("neg", "pos")) -> list[dict]:
    return [
        {
            "index": i,
            "label": labels[int(p > 0.5)],
            "probs": {labels[0]: 1 - p, labels[1]: p},
            "gold": labels[g],
        }
        for i, (p, g) in enumerate(zip(p1.tolist(), gold.tolist(), strict=True))
    ]


def cls_task(p1: np.ndarray, gold: np.ndarray, labels: tuple[str, str] = ("neg", "pos")) -> dict[str, Any]:
    return {
        "type": "classification",
        "labels": list(labels),
        "metrics": ["accuracy"],
        "records": cls_records(p1, gold, labels),
    }


#: the task types behind the kinds of output the synthetic tests use
TT = {
    "categorical": TASK_TYPES.get("classification"),
    "multilabel": TASK_TYPES.get("multilabel"),
    "regression": TASK_TYPES.get("regression"),
    "token": TASK_TYPES.get("token_classification"),
}


def make_ta(
    P: np.ndarray,
    y: np.ndarray,
    kind: str = "categorical",
    example: np.ndarray | None = None,
    metrics: tuple[str, ...] = ("accuracy",),
    labels: list[str] | None = None,
) -> TaskArrays:
    """Synthetic TaskArrays (``example``: each unit's example; default one unit per example)."""
    P = np.asarray(P, dtype=np.float64)
    if example is None:
        example = np.arange(P.shape[1])
    n = int(example.max()) + 1 if len(example) else 0
    if labels is None and kind != "regression":
        labels = [f"l{j}" for j in range(P.shape[2])]
    return TaskArrays(
        "t",
        TT[kind],
        labels,
        list(metrics),
        [Path(f"m{i}") for i in range(P.shape[0])],
        P,
        np.asarray(y),
        np.asarray(example),
        n,
        [None] * n,
    )


def noisy_members(n: int = 300, qualities: tuple[float, ...] = (0.9, 0.6, 0.55), seed: int = 0):
    """Binary members of different quality: member m puts ``q_m``-ish mass on the gold label, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    P = []
    for q in qualities:
        conf = np.clip(rng.normal(q, 0.2, n), 0.01, 0.99)
        p_gold = np.where(rng.random(n) < q, conf, 1 - conf)
        p1 = np.where(y == 1, p_gold, 1 - p_gold)
        P.append(np.stack([1 - p1, p1], axis=1))
    return np.stack(P), y


def no_partial_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def two_fake_members(tmp_path: Path, n: int = 20) -> list[Path]:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, n)
    reg_gold = rng.normal(size=n)
    out = []
    for i in range(2):
        p1 = np.clip(np.where(gold == 1, 0.7, 0.3) + rng.normal(0, 0.25, n), 0.01, 0.99).round(4)
        reg = {
            "type": "regression",
            "labels": None,
            "metrics": ["pearson"],
            "records": [
                {"index": j, "score": float(reg_gold[j] + rng.normal()), "gold": float(reg_gold[j])}
                for j in range(n)
            ],
        }
        out.append(fake_run(tmp_path / f"m{i}", {"a": cls_task(p1, gold), "r": reg}))
    return out


# ---------------------------------------------------------------------------------------- merges

POS = ["good", "great", "fine", "lovely", "happy", "nice"]
NEG = ["bad", "awful", "poor", "sad", "ugly", "grim"]
TOPICS = {
    "sport": ["ball", "goal", "team"],
    "food": ["bread", "soup", "rice"],
    "tech": ["code", "chip", "disk"],
}


def write_toy_data(root: Path) -> dict[str, dict[str, str]]:
    """Seeded jsonl files of three toy tasks (sent, topic: classification; score: regression), 40 train and
    16 dev rows each, under ``root/data``: ``{task: {split: path}}``."""
    g = torch.Generator().manual_seed(0)

    def pick(words: list[str]) -> str:
        return " ".join(words[int(i)] for i in torch.randint(len(words), (4,), generator=g))

    files: dict[str, dict[str, str]] = {}
    for split, n in (("train", 40), ("dev", 16)):
        rows = {"sent": [], "topic": [], "score": []}
        for i in range(n):
            lab = "pos" if i % 2 else "neg"
            rows["sent"].append({"text": f"a {pick(POS if lab == 'pos' else NEG)} day", "label": lab})
            top = list(TOPICS)[i % 3]
            rows["topic"].append({"text": f"about {pick(TOPICS[top])}", "label": top})
            rows["score"].append({"text": pick(POS + NEG), "label": float(i % 5)})
        for task, rs in rows.items():
            path = root / "data" / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rs))
            files.setdefault(task, {})[split] = str(path)
    return files


TYPES = {"sent": "classification", "topic": "classification", "score": "regression"}
LABELS = {"sent": ["neg", "pos"], "topic": sorted(TOPICS), "score": None}


def make_run(
    root: Path, name: str, tasks: list[str], seed: int, base_dir: Path, files: dict, noise: float = 0.05
) -> Path:
    """A run directory: the tiny base encoder perturbed (seeded) + random heads + config.yaml."""
    run = root / name
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    encoder = BertModel.from_pretrained(str(base_dir))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * (p.std() if p.numel() > 1 else 1.0))
    specs = {
        t: HeadSpec(t, TYPES[t], TYPES[t], len(LABELS[t] or [0]), "pooler", 0.1, LABELS[t]) for t in tasks
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MultiTaskModel.build(encoder, specs)
        for head in model.heads.values():
            torch.nn.init.normal_(head.classifier.weight, std=1.0)
    model.save(run / "model", tokenizer)
    lines = [
        f"data_dir: {root}",
        f"cache_dir: {root / 'cache'}",
        f"model: {{name_or_path: {base_dir}}}",
        "tasks:",
    ]
    for t in tasks:
        fs = files[t]
        lines.append(
            f"  - {{name: {t}, type: {TYPES[t]}, text_fields: [text], label_field: label, "
            f"data: {{format: jsonl, files: {{train: {fs['train']}, dev: {fs['dev']}}}}}}}"
        )
    lines += ["subset: {train: 24, eval: 16}", "train: {eval_batch_size: 16, cpu: true}"]
    (run / "config.yaml").write_text("\n".join(lines) + "\n")
    return run


def make_data_runs(root: Path, tiny_model_dir: Path) -> dict[str, Path]:
    """Five hand-made runs: sent (seeds 1, 4, 5: three runs of one task), topic and score."""
    files = write_toy_data(root)
    spec = {
        "sent": (["sent"], 1),
        "topic": (["topic"], 2),
        "score": (["score"], 3),
        "sent_b": (["sent"], 4),
        "sent_c": (["sent"], 5),
    }
    return {n: make_run(root, n, tasks, seed, tiny_model_dir, files) for n, (tasks, seed) in spec.items()}


def merge(
    runs: list[Path],
    method: str,
    output: Path,
    params: dict[str, Any] | None = None,
    base: str | None = None,
    weights: list[float] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    max_distance: float = 0.5,
    **kw: Any,
) -> dict[str, Any]:
    """``merge_runs`` of the request these arguments make."""
    request = MergeRequest(
        runs=list(runs),
        method=method,
        params=params or {},
        base=base,
        weights=weights,
        seed=seed,
        max_distance=max_distance,
    )
    return merge_runs(request, output, overwrite, **kw)


def search(
    runs: list[Path],
    method: str,
    output: Path,
    spec: SearchSpec,
    params: dict[str, Any] | None = None,
    **kw: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``search_merge`` of the request these arguments make."""
    request = MergeRequest(runs=list(runs), method=method, params=params or {}, search=spec)
    return search_merge(request, output, **kw)
