"""One Predictor over a run directory: the CLI's `predict` and (later) the server are thin adapters over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtfuse import rundir
from mtfuse.config import DataConfig, RunConfig
from mtfuse.errors import MtfuseError
from mtfuse.evaluate import predict_encoded, records
from mtfuse.model import MultiTaskModel
from mtfuse.tasks.features import TaskData, Tokenizing, encode_rows, resolve_fields
from mtfuse.tasks.readers import READERS
from mtfuse.tasks.types import TASK_TYPES

INPUT_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


class Predictor:
    """Load a run's model once; predict any of its tasks on rows of text."""

    def __init__(
        self,
        run_dir: str | Path,
        device: str | None = None,
        batch_size: int = 64,
        overrides: list[str] | tuple[str, ...] = (),
    ) -> None:
        """``overrides``: dotted ``key=value`` changes to the run's config (a generation task's decoding:
        ``tasks.NAME.generation.num_beams=4``)."""
        self.run_dir = Path(run_dir)
        self.cfg: RunConfig = rundir.load_run_config(self.run_dir, overrides)
        self.model, self.tokenizer = MultiTaskModel.load(self.run_dir / rundir.MODEL, require_tokenizer=True)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
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
            raise MtfuseError(f"unknown task '{name}'; this run has [{', '.join(self.tasks)}]")
        return self.tasks[name]

    def predict_rows(self, task_name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows carry the task's text fields (a token task's field may be a list of words or a string)."""
        task = self.task(task_name)
        rows = [r if "_where" in r else {**r, "_where": f"input row {i + 1}"} for i, r in enumerate(rows)]
        enc, _ = encode_rows(rows, task, "input", self.tokenizing, with_labels=False)
        preds, probs = predict_encoded(self.model, task, enc, self.batch_size, self.device, self._pad_id())
        recs = records(task, preds, probs)
        for rec, row in zip(recs, rows, strict=True):
            if task.type.token_level:
                toks = row[task.text_fields[0]]
                toks = toks.split() if isinstance(toks, str) else list(toks)
                rec["tokens"] = toks
                rec["tags"] = rec["tags"] + ["O"] * (len(toks) - len(rec["tags"]))  # words cut by max_length
        return recs

    def predict_file(self, task_name: str, path: Path) -> list[dict[str, Any]]:
        fmt = INPUT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise MtfuseError(f"{path}: unknown input format; use one of {sorted(INPUT_FORMATS)}")
        rows = READERS.get(fmt).read(DataConfig(format=fmt, files={"test": str(path)}), "test")
        return self.predict_rows(task_name, rows)

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0
