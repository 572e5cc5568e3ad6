"""One Predictor over a run directory: the CLI's `predict`, the server (`mtfuse.serve`) and the ONNX backend
(`mtfuse.export.OnnxModel`, which stands in for the torch model) are thin adapters over it."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtfuse import rundir
from mtfuse.config import DataConfig, RunConfig
from mtfuse.errors import MtfuseError
from mtfuse.evaluate import outside_index, predict_encoded, records, word_level
from mtfuse.machine import native_cpu_bf16
from mtfuse.model import MultiTaskModel
from mtfuse.tasks.features import Encoded, TaskData, Tokenizing, collate, encode_rows, resolve_fields
from mtfuse.tasks.readers import READERS
from mtfuse.tasks.types import TASK_TYPES, TaskType

INPUT_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
#: torch: the run's MultiTaskModel; onnx / onnx-int8: RUN_DIR/onnx/ written by `mtfuse export` (CPU)
BACKENDS = ("torch", "onnx", "onnx-int8")
#: fp32 (the default: predictions as evaluate gives them); bf16: bf16 autocast for every task, about 1.8x the
#: speed on a CPU with native bf16 but up to 0.7% of a weakly trained model's labels change
#: (benchmarks/inference_tasks.py); auto: bf16 on such a CPU for the tasks whose outputs are argmax decisions
#: (not values, texts or spans), fp32 elsewhere. torch backend only (ONNX keeps its own).
PRECISIONS = ("fp32", "bf16", "auto")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise MtfuseError(f"--backend '{backend}': choose from [{', '.join(BACKENDS)}]")
    return backend


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise MtfuseError(f"--precision '{precision}': choose from [{', '.join(PRECISIONS)}]")
    return precision


def resolve_precision(precision: str, device: torch.device, backend: str = "torch") -> str:
    """What ``precision`` means on ``device``: ``auto`` where the CPU has native bf16, else ``fp32``;
    ``fp32``; ``bf16`` (checked against the GPU). ONNX backends: ``fp32`` (they keep their own)."""
    check_precision(precision)
    if backend != "torch":
        return "fp32"
    if precision == "auto":
        return "auto" if device.type == "cpu" and native_cpu_bf16() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MtfuseError("--precision bf16: this GPU has no bf16; use fp32")
    return precision


def check_source(path: str | Path) -> bool:
    """A directory predictions can come from (cheap checks, nothing loaded); True for an ensemble or stack."""
    from mtfuse.fusion.ensemble.members import is_ensemble_dir

    path = Path(path)
    if not path.is_dir():
        raise MtfuseError(f"{path}: no such directory (give a train, merge, ensemble or stack directory)")
    if is_ensemble_dir(path):
        return True
    if not rundir.looks_like_run(path):
        raise MtfuseError(
            f"{path}: not a run directory (no {rundir.CONFIG} and {rundir.MODEL}/; give a train, merge, "
            "ensemble or stack directory)"
        )
    return False


def load_predictor(
    path: str | Path,
    backend: str = "torch",
    device: str | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
):
    """A Predictor for a train or merge directory, an EnsemblePredictor for an ensemble or stack directory."""
    path = Path(path)
    check_backend(backend)
    if check_source(path):
        from mtfuse.fusion.ensemble import EnsemblePredictor

        return EnsemblePredictor(
            path, device=device, batch_size=batch_size, backend=backend, precision=precision
        ).load()
    return Predictor(path, device=device, batch_size=batch_size, backend=backend, precision=precision)


class Predictor:
    """Load a run's model once; predict any of its tasks on rows of text."""

    def __init__(
        self,
        run_dir: str | Path,
        device: str | None = None,
        batch_size: int = 64,
        overrides: list[str] | tuple[str, ...] = (),
        backend: str = "torch",
        precision: str = "fp32",
    ) -> None:
        """``overrides``: dotted ``key=value`` changes to the run's config (a generation task's decoding:
        ``tasks.NAME.generation.num_beams=4``); ``backend``: torch, onnx or onnx-int8 (``mtfuse export``);
        ``precision``: see ``PRECISIONS`` (``self.precision``: what it resolved to on this device)."""
        self.run_dir = Path(run_dir)
        self.backend = check_backend(backend)
        check_precision(precision)  # before the model loads
        self.cfg: RunConfig = rundir.load_run_config(self.run_dir, overrides)
        if backend == "torch":
            self.model, self.tokenizer = MultiTaskModel.load(
                self.run_dir / rundir.MODEL, require_tokenizer=True
            )
        else:
            from mtfuse.export import load_onnx

            self.model, self.tokenizer = load_onnx(self.run_dir, int8=backend == "onnx-int8")
            device = "cpu"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.precision = resolve_precision(precision, self.device, backend)
        self.batch_size = batch_size
        self.tokenizing = Tokenizing(self.tokenizer, None)
        self.tasks: dict[str, TaskData] = {}
        for tc in self.cfg.tasks:
            if tc.name not in self.model.specs:
                continue
            fields = resolve_fields(tc, READERS.get(tc.data.format).defaults(tc.data))
            spec = self.model.specs[tc.name]
            self.tasks[tc.name] = TaskData(tc, TASK_TYPES.get(tc.type), fields[0], fields[1], spec.labels)

    def task(self, name: str) -> TaskData:
        if name not in self.tasks:
            why = getattr(self.model, "left_out", {}).get(name)  # an ONNX export's generation tasks
            if why:
                from mtfuse.export import not_exported

                raise not_exported(name, why)
            raise MtfuseError(f"unknown task '{name}'; this run has [{', '.join(self.tasks)}]")
        return self.tasks[name]

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per task: its type, text fields, labels (None for regression) and max length (what a client sends)."""
        return {
            name: {
                "type": t.type.name,
                "text_fields": list(t.text_fields),
                "labels": t.labels,
                "max_length": t.cfg.max_length,
            }
            for name, t in self.tasks.items()
        }

    def predict_rows(self, task_name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows carry the task's text fields (a token task's field may be a list of words or a string)."""
        task = self.task(task_name)
        rows = _located(rows)
        enc, _ = encode_rows(rows, task, "input", self.tokenizing, with_labels=False)
        with torch.inference_mode():
            preds, probs = predict_encoded(
                self.model, task, enc, self.batch_size, self.device, self._pad_id(), self._autocast([task])
            )
        return _finish(task, records(task, preds, probs), rows)

    def predict_all(
        self, task_names: list[str], rows: list[dict[str, Any]]
    ) -> dict[str, list[dict[str, Any]]]:
        """``{task: records}`` for each task on the same rows (each row carries every task's text fields).

        Tasks whose inputs tokenise to the same sequences (same text fields and max length) share one
        ``forward_all`` call per batch: one encoder pass under hard sharing and mmoe."""
        tasks = [self.task(n) for n in task_names]
        rows = _located(rows)
        encs = {t.name: encode_rows(rows, t, "input", self.tokenizing, with_labels=False)[0] for t in tasks}
        groups: dict[str, list[TaskData]] = {}
        out: dict[str, list[dict[str, Any]]] = {}
        for t in tasks:
            if _predicts_alone(t):  # its type decodes on its own (generation, span QA, masked LM)
                with torch.inference_mode():
                    preds, probs = predict_encoded(
                        self.model,
                        t,
                        encs[t.name],
                        self.batch_size,
                        self.device,
                        self._pad_id(),
                        self._autocast([t]),
                    )
                out[t.name] = _finish(t, records(t, preds, probs), rows)
            else:
                groups.setdefault(_encoding_key(encs[t.name]), []).append(t)
        for group in groups.values():
            for t, (preds, probs) in zip(group, self._predict_group(group, encs), strict=True):
                out[t.name] = _finish(t, records(t, preds, probs), rows)
        return {n: out[n] for n in task_names}

    def _autocast(self, tasks: list[TaskData]) -> Callable[[], Any]:
        """The context a forward pass for ``tasks`` runs in: bf16 autocast, or none (fp32). Under ``auto``,
        bf16 only where every task's outputs are argmax decisions (not values, not decoded texts or spans):
        there rounding can only change a near-tie's label (measured: 99.3-100% of labels kept)."""
        if self.precision == "fp32" or (
            self.precision == "auto" and any(t.type.continuous or _predicts_alone(t) for t in tasks)
        ):
            return contextlib.nullcontext
        device_type = self.device.type
        return lambda: torch.autocast(device_type, dtype=torch.bfloat16)

    @torch.inference_mode()
    def _predict_group(self, tasks: list[TaskData], encs: dict[str, Encoded]) -> list[tuple[list, list]]:
        """(predictions, probabilities) per task, as ``predict_encoded`` gives them, from one forward_all call
        per batch (the tasks' encodings are identical; token tasks decode words with their own word ids)."""
        enc = encs[tasks[0].name]
        names = [t.name for t in tasks]
        order = np.argsort(-enc.lengths(), kind="stable")
        results = [([None] * len(enc), [None] * len(enc)) for _ in tasks]
        autocast = self._autocast(tasks)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = collate(enc, idx, self._pad_id(), tasks[0].type)
            batch.pop("labels", None)
            with autocast():
                logits = self.model.forward_all({k: v.to(self.device) for k, v in batch.items()}, names)
            for t, (preds, probs) in zip(tasks, results, strict=True):
                p, pr = t.type.predict(logits[t.name])
                te = encs[t.name]
                for r, i in enumerate(idx):
                    if t.type.token_level:
                        n_words = te.n_words[i] if te.n_words is not None else None
                        preds[i], probs[i] = word_level(
                            te.word_ids[i], p[r], pr[r], n_words, outside_index(t)
                        )  # type: ignore[index]
                    else:
                        preds[i], probs[i] = p[r], pr[r]
        return results

    def predict_file(self, task_name: str, path: Path) -> list[dict[str, Any]]:
        fmt = INPUT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise MtfuseError(f"{path}: unknown input format; use one of {sorted(INPUT_FORMATS)}")
        rows = READERS.get(fmt).read(DataConfig(format=fmt, files={"test": str(path)}), "test")
        return self.predict_rows(task_name, rows)

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


def _predicts_alone(task: TaskData) -> bool:
    """The task's type has its own prediction path (``TaskType.predict_split``): one shared forward pass and
    the generic decoding do not fit it."""
    return type(task.type).predict_split is not TaskType.predict_split


def _located(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r if "_where" in r else {**r, "_where": f"input row {i + 1}"} for i, r in enumerate(rows)]


def _finish(task: TaskData, recs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Token tasks: the input words, and 'O' for the words cut by max_length."""
    if task.type.token_level:
        for rec, row in zip(recs, rows, strict=True):
            toks = row[task.text_fields[0]]
            toks = toks.split() if isinstance(toks, str) else list(toks)
            rec["tokens"] = toks
            rec["tags"] = rec["tags"] + ["O"] * (len(toks) - len(rec["tags"]))
    return recs


def _encoding_key(enc: Encoded) -> str:
    """Equal for two encodings with the same sequences (then one encoder pass serves both tasks)."""
    h = hashlib.sha256(str((enc.group, len(enc.input_ids))).encode())
    for i, ids in enumerate(enc.input_ids):
        h.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|")
        if enc.token_type_ids is not None:
            h.update(np.asarray(enc.token_type_ids[i], dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()
