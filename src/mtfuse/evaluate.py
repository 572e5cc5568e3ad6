"""Predictions and metrics for tokenised task splits (shared by training, `mtfuse evaluate` and predict)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtfuse.metrics import METRICS, aggregate
from mtfuse.tasks.features import Encoded, TaskData, collate


@torch.no_grad()
def predict_encoded(
    model: torch.nn.Module,
    task: TaskData,
    enc: Encoded,
    batch_size: int,
    device: torch.device,
    pad_id: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[list[Any], list[Any]]:
    """(predictions, probabilities) per example, in input order. Token tasks give word-level lists."""
    own = task.type.predict_split(model, task, enc, batch_size, device, pad_id, autocast)
    if own is not None:
        return own
    was_training = model.training
    model.eval()
    order = np.argsort(-enc.lengths(), kind="stable")  # long first: less padding, early OOM
    preds: list[Any] = [None] * len(enc)
    probs: list[Any] = [None] * len(enc)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate(enc, idx, pad_id, task.type)
        batch.pop("labels", None)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            logits = model(task.name, batch)
        p, pr = task.type.predict(logits)
        for r, i in enumerate(idx):
            if task.type.token_level:
                n_words = enc.n_words[i] if enc.n_words is not None else None
                preds[i], probs[i] = word_level(enc.word_ids[i], p[r], pr[r], n_words, outside_index(task))  # type: ignore[index]
            else:
                preds[i], probs[i] = p[r], pr[r]
    model.train(was_training)
    return preds, probs


def outside_index(task: TaskData) -> int:
    """The tag given to words the model never saw (cut off by max_length): 'O' where the tag set has it."""
    labels = task.labels or []
    return labels.index("O") if "O" in labels else 0


def word_level(
    word_ids: np.ndarray, pred: np.ndarray, prob: np.ndarray, n_words: int | None = None, fill: int = 0
) -> tuple[list[int], list[np.ndarray]]:
    """Keep each word's first sub-word prediction. Words past the truncation (up to ``n_words``) get the
    ``fill`` tag with probability 1, so every gold word is scored (as the CoNLL scorer does)."""
    out_p, out_pr, prev = [], [], -1
    for pos, w in enumerate(word_ids):
        if w >= 0 and w != prev:
            out_p.append(int(pred[pos]))
            out_pr.append(prob[pos])
        prev = w
    if n_words is not None and len(out_p) < n_words:
        one_hot = np.zeros_like(prob[0])
        one_hot[fill] = 1.0
        out_p += [fill] * (n_words - len(out_p))
        out_pr += [one_hot] * (n_words - len(out_pr))
    return out_p, out_pr


def score(task: TaskData, preds: list[Any], gold: list[Any]) -> dict[str, float]:
    """The task's metrics on 0-100. Token tasks score every gold word (unseen words are tagged 'O')."""
    own = task.type.score(task, preds, gold)
    if own is not None:
        return own
    if task.type.token_level:
        labels = task.labels or []
        p_tags = [[labels[j] for j in p] for p in preds]
        g_tags = [list(g) for g in gold]
        short = [i for i, (p, g) in enumerate(zip(p_tags, g_tags, strict=True)) if len(p) != len(g)]
        if short:  # every gold word has a prediction (word_level fills the words past max_length)
            raise ValueError(
                f"task '{task.name}': predictions and gold differ in length for examples {short[:5]}"
            )
        return {m: METRICS.get(m)(p_tags, g_tags) for m in task.metrics}
    p_arr, g_arr = np.array(preds), np.array(gold)
    return {m: METRICS.get(m)(p_arr, g_arr) for m in task.metrics}


def evaluate_tasks(
    model: torch.nn.Module,
    tasks: dict[str, TaskData],
    split: str,
    batch_size: int,
    device: torch.device,
    pad_id: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[dict[str, dict[str, float]], dict[str, tuple[list[Any], list[Any]]]]:
    """Metrics per task (and the predictions behind them) on one split of every task."""
    metrics, outputs = {}, {}
    for name, task in tasks.items():
        preds, probs = predict_encoded(model, task, task.splits[split], batch_size, device, pad_id, autocast)
        metrics[name] = score(task, preds, task.gold[split])
        outputs[name] = (preds, probs)
    return metrics, outputs


def with_average(metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {"tasks": metrics, "average": aggregate(metrics)}


def records(task: TaskData, preds: list[Any], probs: list[Any], gold: list[Any] | None = None) -> list[dict]:
    """JSON-ready prediction records: labels by name, probabilities per label, gold when known.

    Token tasks give ``tags`` (one per word the model saw) and ``probs``: one ``{label: probability}`` dict
    per such word (the full distribution, which ensembles average word by word)."""
    out = []
    for i, (p, pr) in enumerate(zip(preds, probs, strict=True)):
        rec: dict[str, Any] = {"index": i, **task.type.record(p, pr, task.labels)}
        if gold is not None:
            rec["gold"] = task.type.gold_record(gold[i], task.labels)
        out.append(rec)
    return out


def evaluate_run(
    run_dir: str | Path,
    split: str = "dev",
    overrides: list[str] | tuple[str, ...] = (),
    output: Path | None = None,
    whole_splits: bool = True,
) -> tuple[dict[str, Any], Path]:
    """`mtfuse evaluate`: load a run directory, score every task it has a head for, write metrics JSON.

    ``whole_splits``: score whole splits (the training config's ``subset`` was for training) unless the
    overrides set ``subset.*``; merge passes False so a merged model is scored on its inputs' dev examples."""
    from mtfuse import rundir
    from mtfuse.model import MultiTaskModel
    from mtfuse.tasks.prepare import HOLDOUT, prepare_tasks

    run_dir = Path(run_dir)
    out = output or run_dir / rundir.metrics_file(split)
    cfg = rundir.load_run_config(run_dir, overrides)
    if whole_splits and not any(o.strip().startswith("subset.") for o in overrides):
        # the training config's subset was for training; evaluate scores whole splits unless asked (but
        # train-holdout is defined by the rows subset.train kept, so that one stays)
        keep_train = cfg.subset.train if split == HOLDOUT else None
        cfg = cfg.model_copy(
            update={"subset": cfg.subset.model_copy(update={"train": keep_train, "eval": None})}
        )
    model, tokenizer = MultiTaskModel.load(run_dir / rundir.MODEL, require_tokenizer=True)
    cfg = cfg.model_copy(update={"tasks": [t for t in cfg.tasks if t.name in model.specs]})
    tasks = prepare_tasks(cfg, tokenizer, [split], vocabs={n: s.labels for n, s in model.specs.items()})
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg.train.cpu else "cpu")
    model.to(device)
    metrics, outputs = evaluate_tasks(
        model, tasks, split, cfg.train.eval_batch_size, device, tokenizer.pad_token_id or 0
    )
    result = {"split": split, **with_average(metrics)}
    result["examples"] = {n: t.examples(split) for n, t in tasks.items()}
    rundir.write_json(out, result)
    for n, (p, pr) in outputs.items():
        rundir.write_jsonl(
            rundir.inside(run_dir / rundir.PREDICTIONS, split, f"{n}.jsonl"),
            records(tasks[n], p, pr, tasks[n].gold[split]),
        )
    return result, out
