"""The run log: one object that writes ``log.jsonl`` and the same numbers to experiment trackers.

Trackers are accelerate's (``accelerate.tracking``: TensorBoard by default, W&B, MLflow, Comet, Aim, ... by
config alone: ``train.log_with``), built as ``Accelerator.init_trackers`` builds them. They are made here rather
than through the Accelerator because the run directory (TensorBoard's folder) is only known once the run starts,
and a resumed TensorBoard run must purge what was logged after its checkpoint step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtfuse.errors import ConfigError


def trackers_of(train: Any) -> list[str]:
    """``train.log_with`` without TensorBoard when ``train.tensorboard`` is false."""
    return [t for t in train.log_with if train.tensorboard or t != "tensorboard"]


def check_trackers(names: list[str]) -> None:
    """Refuse, before anything is written, a tracker whose package (named as the tracker) is not installed."""
    import importlib.util

    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise ConfigError(
            f"train.log_with: {missing}: not installed (pip install {' '.join(missing)}), or drop them from "
            "train.log_with"
        )


def make_trackers(
    names: list[str],
    project: str,
    logging_dir: Path,
    init: dict[str, dict[str, Any]],
    resume_step: int | None,
) -> list[Any]:
    """accelerate trackers, started; a tracker whose package is missing is one clear error."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    trackers = []
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[name]
        kwargs = dict(init.get(name, {}))
        if name == "tensorboard":
            # hide what was logged after the checkpoint step (it is redone); that step's own eval is kept
            kwargs.setdefault("purge_step", resume_step + 1 if resume_step is not None else None)
            tracker = cls("", logging_dir / "tb", **kwargs)  # RUN_DIR/tb, as before trackers
        elif cls.requires_logging_directory:
            tracker = cls(project, logging_dir, **kwargs)
        else:
            tracker = cls(project, **kwargs)
        try:
            tracker.start()
        except ImportError as e:
            raise ConfigError(
                f"train.log_with: tracker '{name}' needs its package ({e.name or e}); pip install it or drop it"
            ) from None
        trackers.append(tracker)
    return trackers


class RunLog:
    """JSONL records (``{"step": ..., "event": ...}``) and the same numbers as TensorBoard scalars.

    On resume, what was logged after the checkpoint step is dropped (it is about to be redone)."""

    def __init__(
        self,
        out: Path,
        enabled: bool,
        trackers: list[str],
        resume_step: int | None,
        project: str | None = None,
        tracker_init: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.path, self.enabled = out / "log.jsonl", enabled
        if enabled and resume_step is not None and self.path.exists():
            kept = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln and json.loads(ln).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.trackers = (
            make_trackers(trackers, project or out.name, out, tracker_init or {}, resume_step)
            if enabled
            else []
        )

    def write(self, rec: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def scalars(self, values: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(values, step=step)

    def train_record(self, rec: dict[str, Any]) -> None:
        """A record of training losses and the learning rate."""
        self.write(rec)
        self.scalars({k: v for k, v in rec.items() if k != "step"}, rec["step"])

    def eval_record(self, rec: dict[str, Any]) -> None:
        """A dev evaluation with task weights, sampling probabilities and the gradient conflict matrix."""
        self.write(rec)
        if not self.trackers:
            return
        values = {"dev/average": rec["average"]}
        for n, ms in rec["metrics"].items():
            values.update({f"dev/{n}/{m}": v for m, v in ms.items()})
        values.update({f"sampling/{n}": p for n, p in rec["sampling_probs"].items()})
        values.update({f"weights/{n}": w for n, w in rec["task_weights"].items()})
        if "gradient_cosine" in rec:
            names, cos = rec["gradient_cosine"]["tasks"], rec["gradient_cosine"]["cosine"]
            for i in range(len(names)):
                for j in range(i + 1, len(names)):
                    values[f"conflict/{names[i]}-{names[j]}"] = cos[i][j]
        self.scalars(values, rec["step"])

    def close(self) -> None:
        for t in self.trackers:
            t.finish()
        self.trackers = []
