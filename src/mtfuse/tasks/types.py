"""Task types: how labels are read and checked, which head a task gets, its loss and its predictions.

A registry, so new types (generation, multiple choice, span QA) plug in without touching the loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.errors import DataError
from mtfuse.registry import Registry

TASK_TYPES: Registry[TaskType] = Registry("task type")  # holds one instance per type
IGNORE_INDEX = -100  # positions without a label (padding, non-first sub-words)


def register(name: str):
    def deco(cls: type[TaskType]) -> type[TaskType]:
        TASK_TYPES.register(name)(cls())
        return cls

    return deco


class TaskType:
    name: str = ""
    head: str = ""
    token_level = False
    text_fields_allowed: tuple[int, ...] = (1, 2)
    default_metrics: tuple[str, ...] = ()
    metrics_allowed: tuple[str, ...] = ()  # the metrics whose inputs this type's predictions fit
    has_vocab = True

    # -- labels --------------------------------------------------------------------------------------
    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        """The label strings a row carries (one for classification, several for multi-label / token)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where} (field '{field}'): empty label")
        if isinstance(value, (list, tuple, dict, np.ndarray)):
            raise DataError(
                f"{where} (field '{field}'): expected one label, got a {type(value).__name__} "
                f"({str(value)[:60]}); a task with several labels per example is type 'multilabel'"
            )
        return [str(value).strip()]

    def vocab(self, train_rows: list[dict], field: str, fixed: list[str] | None) -> list[str] | None:
        if fixed is not None:
            return list(fixed)
        seen: set[str] = set()
        for row in train_rows:
            seen.update(self.raw_labels(row.get(field), row["_where"], field))
        return sorted(seen)

    def encode_label(self, value: Any, vocab: list[str] | None, where: str, field: str, split: str) -> Any:
        assert vocab is not None
        (lab,) = self.raw_labels(value, where, field)
        return _index(lab, vocab, where, field, split)

    def num_outputs(self, vocab: list[str] | None) -> int:
        assert vocab is not None
        return len(vocab)

    def head_options(self, train_labels: Any) -> dict[str, Any]:
        """Head spec fields computed from the encoded train labels (regression: the targets' scale)."""
        return {}

    def metric_fits(self, metric: str) -> bool:
        return metric in self.metrics_allowed

    def metric_fits_labels(self, metric: str, labels: list[str] | None) -> bool:
        """Whether ``metric`` can score a task with these labels (binary F1 needs exactly two)."""
        return True

    # -- training and prediction -----------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        return torch.tensor(labels, dtype=torch.long)

    def predict(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, probabilities) as numpy arrays from a batch of logits."""
        probs = torch.softmax(logits.float(), dim=-1)
        return probs.argmax(-1).cpu().numpy(), probs.cpu().numpy()

    # -- JSON records (predictions/<task>.jsonl) --------------------------------------------------------
    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        """One example's prediction: the label by name and a probability per label."""
        assert labels is not None
        return {"label": labels[int(pred)], "probs": _label_probs(labels, prob)}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        assert labels is not None
        return labels[int(gold)]

    # -- fusion: ensembles of members' outputs (mtfuse.fusion.ensemble) ---------------------------------
    # Members' outputs are fused per *unit*: ``outputs`` reads a prediction record back into ``[units, C]``
    # rows (one row for sentence-level tasks), ``aligned_units`` says how many units of each example every
    # member contributes, and the fused rows go back into one record per example through ``record``.
    unit = "example"  # what one fused row is: an example, or (token tasks) a word
    #: outputs are real values, not a distribution over labels: no majority vote, no prediction entropy, and
    #: members differ by how far apart their values are (regression)
    continuous = False
    #: the stacking meta-learner (a name in ``mtfuse.fusion.ensemble.stack.LEARNERS``)
    stack_learner = "multinomial"

    def outputs(self, record: dict[str, Any], labels: list[str] | None, where: str) -> np.ndarray:
        """A prediction record's outputs as ``[units, C]`` rows (the inverse of :meth:`record`)."""
        assert labels is not None
        return _probs_row(record.get("probs"), labels, where)[None, :]

    def aligned_units(self, counts: np.ndarray) -> np.ndarray:
        """Units fused per example, from each member's unit counts ``[M, n]``: those every member has."""
        return np.asarray(counts).min(axis=0)

    def fuses_with(self, other: TaskType) -> bool:
        """Members of this type and of ``other`` predict the same kind of output (pair classification and
        classification do), so their outputs can be fused."""
        return isinstance(other, type(self)) or isinstance(self, type(other))

    def same_gold(self, a: Any, b: Any) -> bool:
        """Two members' gold (as written in their records) for one example agree."""
        return bool(a == b)

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        """An example's gold (as written in a record) as the targets of its first ``units`` units."""
        assert labels is not None
        return np.array([_gold_index(labels, gold, where)], dtype=np.int64)

    def decide(self, out: np.ndarray) -> np.ndarray:
        """Decisions from fused outputs ``[U, C]``: a class index per unit."""
        return out.argmax(axis=1)

    def metric_inputs(
        self, decisions: np.ndarray, targets: np.ndarray, example: np.ndarray, labels: list[str] | None
    ) -> tuple[Any, Any]:
        """(predictions, gold) in the form the task's metrics take (as ``mtfuse.evaluate.score`` gives them)."""
        return decisions, targets

    def fused_nll(self, out: np.ndarray, y: np.ndarray) -> float:
        """Mean negative log-likelihood of fused outputs ``[U, C]`` against the targets: the log loss."""
        if not len(y):
            return 0.0
        return float(-np.mean(np.log(np.clip(out[np.arange(len(y)), y], _EPS, None))))

    def fused_nll_grad(self, P: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`fused_nll` of the weighted mean ``sum_m w_m P_m`` and its gradient with respect to ``w``."""
        n = max(len(y), 1)
        py = P[:, np.arange(len(y)), y]  # [M, U]: each member's probability of the gold label
        q = np.clip(w @ py, _EPS, None)
        return float(-np.mean(np.log(q))), -(py / q).sum(axis=1) / n

    def votes(self, out: np.ndarray) -> np.ndarray:
        """One member's votes ``[U, C]`` for a majority vote: 1 for the label it decides."""
        v = np.zeros_like(out, dtype=np.float64)
        v[np.arange(out.shape[0]), out.argmax(axis=1)] = 1.0
        return v

    def member_errors(self, decisions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """One member's errors per unit, flattened: 1 where a decision is wrong, else 0."""
        return (decisions != targets).astype(np.float64).reshape(-1)

    def example_record(
        self, decisions: np.ndarray, outputs: np.ndarray, labels: list[str] | None
    ) -> dict[str, Any]:
        """One example's prediction record (:meth:`record`) from its fused units' decisions and outputs."""
        return self.record(decisions[0], outputs[0], labels)

    def complete_record(self, rec: dict[str, Any], member_rec: dict[str, Any]) -> dict[str, Any]:
        """An ensemble's record for a new input, completed from a member's record of the same input."""
        return rec

    # -- fusion: what data-dependent merging needs (mtfuse.fusion.merge.statistics) ---------------------
    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """log p(y | x) summed over a batch, y chosen by ``mode``: ``sampled`` from the head's predictive
        distribution, ``predicted`` (its argmax) or ``gold`` (Fisher merging's likelihood)."""
        logp = torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])
        return _categorical_ll(logp, labels.reshape(-1).to(logp.device), mode, gen)

    def prediction_entropy(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Mean Shannon entropy of the head's predictive distribution (what AdaMerging minimises); None
        when the head has no distribution."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        return (-(logp.exp() * logp).sum(-1)).mean()


_EPS = 1e-12


def _probs_row(d: Any, labels: list[str], where: str) -> np.ndarray:
    if not isinstance(d, dict):
        raise DataError(f"{where}: 'probs' is not a {{label: probability}} dict")
    if set(d) != set(labels):
        raise DataError(f"{where}: probabilities over labels {sorted(d)} but the task's labels are {labels}")
    return np.array([float(d[lab]) for lab in labels], dtype=np.float64)


def _gold_index(labels: list[str], lab: Any, where: str) -> int:
    try:
        return labels.index(str(lab))
    except ValueError:
        raise DataError(f"{where}: gold label '{lab}' is not among the task's labels {labels}") from None


def _categorical_ll(logp: torch.Tensor, gold: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    if mode == "sampled":
        y = torch.multinomial(logp.detach().exp().cpu(), 1, generator=gen).reshape(-1).to(logp.device)
    elif mode == "predicted":
        y = logp.detach().argmax(-1)
    else:
        y = gold
    return logp.gather(1, y.reshape(-1, 1)).sum()


def _label_probs(labels: list[str], prob: Any) -> dict[str, float]:
    return {lab: round(float(x), 6) for lab, x in zip(labels, prob, strict=True)}


def _index(lab: str, vocab: list[str], where: str, field: str, split: str) -> int:
    try:
        return vocab.index(lab)
    except ValueError:
        shown = vocab if len(vocab) <= 20 else vocab[:20] + ["..."]
        raise DataError(
            f"{where} (field '{field}'): label '{lab}' in split '{split}' is not among the train labels {shown}"
        ) from None


@register("classification")
class Classification(TaskType):
    """Single-sentence or sentence-pair classification (one label per example)."""

    name = "classification"
    head = "classification"
    default_metrics = ("accuracy",)
    metrics_allowed = ("accuracy", "f1", "matthews", "micro_f1", "macro_f1")

    def metric_fits_labels(self, metric: str, labels: list[str] | None) -> bool:
        return metric != "f1" or len(labels or []) == 2  # binary F1 of the positive class


@register("pair_classification")
class PairClassification(Classification):
    """Sentence-pair classification: two text fields, encoded as one [CLS] a [SEP] b [SEP] input."""

    name = "pair_classification"
    text_fields_allowed = (2,)


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


@register("multilabel")
class MultiLabel(TaskType):
    """Multi-label classification: a list (or a ',' / '|' separated string) of labels per example."""

    name = "multilabel"
    head = "multilabel"
    default_metrics = ("micro_f1", "macro_f1")
    metrics_allowed = ("micro_f1", "macro_f1", "accuracy")

    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value if str(v).strip()]
        if value is None:
            raise DataError(f"{where} (field '{field}'): missing label list")
        text = str(value)
        sep = "|" if "|" in text else ","
        return [p.strip() for p in text.split(sep) if p.strip()]

    def encode_label(
        self, value: Any, vocab: list[str] | None, where: str, field: str, split: str
    ) -> np.ndarray:
        assert vocab is not None
        out = np.zeros(len(vocab), dtype=np.float32)
        for lab in self.raw_labels(value, where, field):
            out[_index(lab, vocab, where, field, split)] = 1.0
        return out

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        return torch.from_numpy(np.stack(labels))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def predict(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        probs = torch.sigmoid(logits.float()).cpu().numpy()
        return (probs >= 0.5).astype(np.int64), probs

    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        assert labels is not None
        return {"labels": [labels[j] for j in np.flatnonzero(pred)], "probs": _label_probs(labels, prob)}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        assert labels is not None
        return [labels[j] for j in np.flatnonzero(gold)]

    # -- fusion: a probability per label, each label its own binary decision ------------------------------
    stack_learner = "per_label"

    def same_gold(self, a: Any, b: Any) -> bool:
        return sorted(a) == sorted(b)

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        assert labels is not None
        y = np.zeros((1, len(labels)), dtype=np.float64)
        for lab in gold:
            y[0, _gold_index(labels, lab, where)] = 1.0
        return y

    def decide(self, out: np.ndarray) -> np.ndarray:
        return (out >= 0.5).astype(np.int64)

    def metric_inputs(
        self, decisions: np.ndarray, targets: np.ndarray, example: np.ndarray, labels: list[str] | None
    ) -> tuple[Any, Any]:
        return decisions, targets.astype(np.int64)

    def fused_nll(self, out: np.ndarray, y: np.ndarray) -> float:
        """Binary cross-entropy per label."""
        q = np.clip(out, _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))) if len(y) else 0.0

    def fused_nll_grad(self, P: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
        q = np.clip(np.tensordot(w, P, axes=1), _EPS, 1 - _EPS)
        loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        d = -(y / q - (1 - y) / (1 - q)) / q.size
        return float(loss), np.einsum("mnc,nc->m", P, d)

    def votes(self, out: np.ndarray) -> np.ndarray:
        return (out >= 0.5).astype(np.float64)

    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """Independent Bernoullis, one per label."""
        logits = logits.float()
        p = torch.sigmoid(logits.detach())
        if mode == "sampled":
            y = torch.bernoulli(p.cpu(), generator=gen).to(p.device)
        elif mode == "predicted":
            y = (p >= 0.5).float()
        else:
            y = labels.float().to(logits.device)
        return -F.binary_cross_entropy_with_logits(logits, y, reduction="sum")

    def prediction_entropy(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Mean Bernoulli entropy per label."""
        logits = logits.float()
        p = torch.sigmoid(logits)
        ls, lns = F.logsigmoid(logits), F.logsigmoid(-logits)
        return -(p * ls + (1 - p) * lns).mean()


@register("token_classification")
class TokenClassification(TaskType):
    """Token tagging (e.g. NER with IOB2 tags): the label goes on each word's first sub-word only."""

    name = "token_classification"
    head = "token_classification"
    token_level = True
    text_fields_allowed = (1,)
    default_metrics = ("seqeval_f1",)
    metrics_allowed = ("seqeval_f1",)

    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        if not isinstance(value, (list, tuple)):
            if isinstance(value, str):
                return value.split()
            raise DataError(f"{where} (field '{field}'): expected a list of tags")
        return [str(v) for v in value]

    def encode_label(
        self, value: Any, vocab: list[str] | None, where: str, field: str, split: str
    ) -> np.ndarray:
        assert vocab is not None
        return np.array(
            [_index(t, vocab, where, field, split) for t in self.raw_labels(value, where, field)],
            dtype=np.int64,
        )

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        out = torch.full((len(labels), seq_len), IGNORE_INDEX, dtype=torch.long)
        for r, lab in enumerate(labels):
            out[r, : len(lab)] = torch.from_numpy(lab)
        return out

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)

    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        """Word-level ``tags`` and, per word, the full ``{label: probability}`` (ensembles average these)."""
        assert labels is not None
        return {"tags": [labels[j] for j in pred], "probs": [_label_probs(labels, w) for w in prob]}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        return gold  # already tag strings

    # -- fusion: a distribution per word; only the words every member saw are fused and scored ------------
    unit = "word"

    def outputs(self, record: dict[str, Any], labels: list[str] | None, where: str) -> np.ndarray:
        assert labels is not None
        words = record.get("probs")
        if not isinstance(words, list):
            raise DataError(f"{where}: 'probs' is not a list of per-word distributions")
        if words and not isinstance(words[0], dict):
            raise DataError(
                f"{where}: 'probs' holds only each word's top probability (written by an older mtfuse); "
                "token ensembles need the full distribution per word: evaluate or train the run again"
            )
        arr = np.array([_probs_row(w, labels, where) for w in words], dtype=np.float64)
        return arr.reshape(len(words), len(labels))

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        assert labels is not None
        return np.array([_gold_index(labels, t, where) for t in gold[:units]], dtype=np.int64)

    def metric_inputs(
        self, decisions: np.ndarray, targets: np.ndarray, example: np.ndarray, labels: list[str] | None
    ) -> tuple[Any, Any]:
        """Tag sequences per sentence (of the sentences with at least one fused word)."""
        assert labels is not None
        lab = np.asarray(labels, dtype=object)
        return _sentences(lab[decisions], example), _sentences(lab[targets], example)

    def example_record(
        self, decisions: np.ndarray, outputs: np.ndarray, labels: list[str] | None
    ) -> dict[str, Any]:
        return self.record(decisions, outputs, labels)

    def complete_record(self, rec: dict[str, Any], member_rec: dict[str, Any]) -> dict[str, Any]:
        """The input words, and 'O' for the words past ``max_length`` (as ``mtfuse.predict`` does)."""
        toks = member_rec.get("tokens")
        if toks is not None:
            rec["tokens"] = toks
            rec["tags"] = rec["tags"] + ["O"] * (len(toks) - len(rec["tags"]))
        return rec

    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """Summed over the labelled (first sub-word) positions."""
        logp = torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])
        gold = labels.reshape(-1).to(logp.device)
        keep = gold != IGNORE_INDEX
        return _categorical_ll(logp[keep], gold[keep], mode, gen)

    def prediction_entropy(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Mean entropy per real token."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        h = -(logp.exp() * logp).sum(-1)
        m = attention_mask.to(h.dtype)
        return (h * m).sum() / m.sum().clamp(min=1)


def _sentences(values: np.ndarray, example: np.ndarray) -> list[list[Any]]:
    """Per-unit values split into per-example lists (examples without units give none)."""
    if len(values) == 0:
        return []
    cuts = np.flatnonzero(np.diff(example)) + 1
    return [list(v) for v in np.split(values, cuts)]
