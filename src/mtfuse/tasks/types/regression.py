"""Regression: one number per example, learnt on standardised targets and reported in their units."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.errors import DataError
from mtfuse.tasks.types.base import (
    TaskType,
    register,
)


@register("regression")
class Regression(TaskType):
    """A real-valued target per example (e.g. STS-B similarity), scored by correlation.

    Trained on standardised targets: :meth:`head_options` gives the train targets' mean and standard deviation
    for the head spec, the head answers ``mean + std * z`` (so predictions, records, metrics, ensembles and
    merges stay in the original units) and :meth:`loss` divides the squared error by ``std^2``.
    """

    name = "regression"
    head = "regression"
    default_metrics = ("pearson", "spearman")
    metrics_allowed = ("pearson", "spearman")
    has_vocab = False

    def vocab(self, train_rows: list[dict], field: str, fixed: list[str] | None) -> list[str] | None:
        return None

    def encode_label(self, value: Any, vocab: list[str] | None, where: str, field: str, split: str) -> float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"{where} (field '{field}'): regression target '{value}' is not a number"
            ) from None
        if not np.isfinite(out):
            raise DataError(f"{where} (field '{field}'): regression target '{value}' is not finite")
        return out

    def num_outputs(self, vocab: list[str] | None) -> int:
        return 1

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        return torch.tensor(labels, dtype=torch.float32)

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """The train mean for every example."""
        return [float(np.mean(gold_train))] * len(gold)

    def head_options(self, train_labels: Any) -> dict[str, float]:
        """The train targets' mean and standard deviation, for the head spec (``target_mean``, ``target_std``).

        The regression head learns on ``(y - mean) / std`` and answers in the original units (see
        ``mtfuse.model.heads.RegressionHead``). A constant (or single) target gives ``std = 1``.
        """
        y = np.asarray(train_labels, dtype=np.float64).reshape(-1)
        if y.size == 0:
            return {"target_mean": 0.0, "target_std": 1.0}
        mean, std = float(y.mean()), float(y.std())
        return {"target_mean": mean, "target_std": std if std > 1e-12 * max(1.0, abs(mean)) else 1.0}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, target_std: float = 1.0) -> torch.Tensor:
        """Mean squared error on the standardised scale: ``mean((mu - y)^2) / target_std^2`` (``mu``, ``y`` in the
        targets' units; ``target_std`` from the head, ``RegressionHead.loss_kwargs``)."""
        mse = F.mse_loss(logits.float().view(-1), labels.float().view(-1))
        return mse if target_std == 1.0 else mse / float(target_std) ** 2

    def predict(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        v = logits.float().view(-1).cpu().numpy()
        return v, v

    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        return {"score": float(pred)}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        return float(gold)

    # -- fusion: a value per example, averaged; squared error is the Gaussian NLL up to constants ----------
    continuous = True
    stack_learner = "ridge"

    def outputs(self, record: dict[str, Any], labels: list[str] | None, where: str) -> np.ndarray:
        if "score" not in record:
            raise DataError(f"{where}: no 'score' (the prediction of a regression task)")
        return np.array([[float(record["score"])]], dtype=np.float64)

    def same_gold(self, a: Any, b: Any) -> bool:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        return np.array([float(gold)], dtype=np.float64)

    def decide(self, out: np.ndarray) -> np.ndarray:
        return out[:, 0]

    def fused_nll(self, out: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean((out.reshape(len(y)) - y) ** 2)) if len(y) else 0.0

    def fused_nll_grad(self, P: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
        n = max(len(y), 1)
        r = np.tensordot(w, P, axes=1)[:, 0] - y
        return float(np.mean(r**2)), 2.0 * (P[:, :, 0] @ r) / n

    def votes(self, out: np.ndarray) -> np.ndarray:
        raise DataError("a regression output is a value, not a vote; average it instead")

    def member_errors(self, decisions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return decisions - targets  # residuals

    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """A unit-variance Gaussian: under ``sampled`` / ``predicted`` mu itself ((d mu)^2 is the exact expected
        Fisher), under ``gold`` -(y - mu)^2 / 2."""
        mu = logits.float().reshape(-1)
        if mode == "gold":
            return -0.5 * ((labels.float().reshape(-1).to(mu.device) - mu) ** 2).sum()
        return mu.sum()

    def prediction_entropy(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        return None  # a value, not a distribution
