"""Predict new inputs through an ensemble's members and its saved weights or meta-learner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtfuse import rundir
from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble.members import is_ensemble_dir, make_records, read_json, stack_outputs
from mtfuse.fusion.ensemble.methods import METHODS
from mtfuse.tasks.types import TASK_TYPES


class EnsemblePredictor:
    """Predict new inputs through every member (``mtfuse.predict.Predictor``, or a nested ensemble) and the
    ensemble's saved weights or meta-learner (JSON, never pickle)."""

    def __init__(
        self,
        ensemble_dir: str | Path,
        device: str | None = None,
        batch_size: int = 64,
        backend: str = "torch",
        precision: str = "fp32",
    ) -> None:
        self.dir = Path(ensemble_dir)
        if not is_ensemble_dir(self.dir):
            raise MtfuseError(f"{self.dir}: not an ensemble directory (no {rundir.ENSEMBLE})")
        self.spec = read_json(self.dir / rundir.ENSEMBLE)
        self.members = [Path(m["path"]) for m in self.spec["members"]]
        for p in self.members:
            if not p.is_dir():
                raise MtfuseError(f"{self.dir / rundir.ENSEMBLE}: member run directory {p} not found")
        self.device, self.batch_size, self.backend = device, batch_size, backend
        self.precision = precision  # each member's (``mtfuse.predict.PRECISIONS``)
        self._predictors: dict[int, Any] = {}

    @property
    def tasks(self) -> list[str]:
        return list(self.spec["tasks"])

    def member(self, i: int) -> Any:
        if i not in self._predictors:
            from mtfuse.predict import Predictor

            path = self.members[i]
            cls = EnsemblePredictor if is_ensemble_dir(path) else Predictor
            self._predictors[i] = cls(
                path,
                device=self.device,
                batch_size=self.batch_size,
                backend=self.backend,
                precision=self.precision,
            )
        return self._predictors[i]

    def load(self) -> EnsemblePredictor:
        """Load every member now (members are otherwise loaded when first needed): a server fails at start."""
        for i in range(len(self.members)):
            member = self.member(i)
            if isinstance(member, EnsemblePredictor):
                member.load()
        return self

    def describe(self) -> dict[str, dict[str, Any]]:
        """As ``Predictor.describe``: type and labels from ensemble.json, text fields from the first member."""
        first = self.member(0).describe()
        return {
            name: {**first[name], "type": t["type"], "labels": t["labels"], "method": t["method"]}
            for name, t in self.spec["tasks"].items()
        }

    def predict_rows(self, task: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Records like ``Predictor.predict_rows`` (label / labels / score / tags and probabilities)."""
        self._check(task)
        outs = [self.member(i).predict_rows(task, rows) for i in range(len(self.members))]
        return self._fuse(task, outs, len(rows))

    def predict_all(self, tasks: list[str], rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """``{task: records}``: each member predicts every task at once (``predict_all``), then each task is
        fused."""
        for task in tasks:
            self._check(task)
        outs = [self.member(i).predict_all(tasks, rows) for i in range(len(self.members))]
        return {task: self._fuse(task, [o[task] for o in outs], len(rows)) for task in tasks}

    def _check(self, task: str) -> None:
        if task not in self.spec["tasks"]:
            raise MtfuseError(f"unknown task '{task}'; this ensemble has [{', '.join(self.tasks)}]")

    def _fuse(self, task: str, outs: list[list[dict[str, Any]]], n_rows: int) -> list[dict[str, Any]]:
        t = self.spec["tasks"][task]
        labels = t["labels"]
        try:
            tt = TASK_TYPES.get(t["type"])
        except (KeyError, MtfuseError) as e:
            raise MtfuseError(f"{self.dir / rundir.ENSEMBLE}: task '{task}': {e}") from None
        if tt.fused_as_text:  # generation: the MBR choice among the members' texts
            from mtfuse.fusion.ensemble.texts import select

            texts = [[tt.text_of(rec, f"member {self.members[m]}") for rec in o] for m, o in enumerate(outs)]
            out = select(texts, t["params"].get("weights"))
            return [
                {"index": i, "text": text, "member": k}
                for i, (text, k) in enumerate(zip(out["texts"], out["members"], strict=True))
            ]
        outputs = [
            [
                tt.outputs(rec, labels, f"member {self.members[m]}, input row {r + 1}")
                for r, rec in enumerate(o)
            ]
            for m, o in enumerate(outs)
        ]
        P, example = stack_outputs(tt, outputs)
        out = METHODS.get(t["method"]).apply(P, t["params"], tt)
        recs = make_records(tt, labels, out, example, n_rows)
        return [tt.complete_record(rec, first) for rec, first in zip(recs, outs[0], strict=True)]

    def predict_file(self, task: str, path: Path) -> list[dict[str, Any]]:
        from mtfuse.config import DataConfig
        from mtfuse.predict import INPUT_FORMATS
        from mtfuse.tasks.readers import READERS

        path = Path(path)
        fmt = INPUT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise MtfuseError(f"{path}: unknown input format; use one of {sorted(INPUT_FORMATS)}")
        rows = READERS.get(fmt).read(DataConfig(format=fmt, files={"test": str(path)}), "test")
        return self.predict_rows(task, rows)
