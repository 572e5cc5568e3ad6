"""The task-type contract and its registry: what every task type provides (reading and checking labels, its
head, loss, predictions, prediction records, metric inputs, and what fusion needs: decisions, NLL, alignment,
votes, Fisher log-likelihood, AdaMerging entropy), with the shared defaults of single-label classification.

A new task type is one file in this folder with a ``@register("name")`` subclass, plus its import in
``__init__.py``; nothing outside ``tasks/`` asks for a type by name.
"""

from __future__ import annotations

from collections import Counter
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
    #: examples carry a label field; False (masked_lm): the text is all there is, ``label_field`` is not read
    labelled = True

    # -- inputs ----------------------------------------------------------------------------------------
    def example_texts(self, values: list[Any], where: str, fields: list[str]) -> list[tuple[str, ...]] | None:
        """The sequences one example is encoded as, from its text fields' values: None (the default) for one
        sequence of the text fields as strings; a type whose examples are several sequences (multiple choice:
        one (context, choice) pair per choice) returns them, and they are collated as ``[B * C, T]``."""
        return None

    # -- labels --------------------------------------------------------------------------------------
    def map_labels(self, rows: list[dict], field: str, cfg: Any) -> list[dict]:
        """Rows with label ids replaced by their names (``data.label_map``; each tag of a token task). A type
        whose label holds several kinds of id (intent_slots) overrides it."""
        from mtfuse.tasks.readers import apply_label_map, label_map

        mapping = label_map(cfg.data)
        if mapping is None:
            return rows
        return apply_label_map(rows, field, mapping, cfg.data.label_map, many=self.token_level)

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

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """The trivial baseline every score is shown beside: the most frequent train label, for every example."""
        top = Counter(int(g) for g in gold_train).most_common(1)[0][0]
        return [top] * len(gold)

    def head_options(self, train_labels: Any) -> dict[str, Any]:
        """Head spec fields computed from the encoded train labels (regression: the targets' scale)."""
        return {}

    def head_config(
        self, task: Any, encoder_config: Any, tokenizer: Any, model: Any = None
    ) -> dict[str, Any]:
        """Head spec fields that depend on the encoder, the tokenizer and the ``model`` config section (a
        decoder's config and special tokens; ``model.decoder``); none by default."""
        return {}

    def describe(self, task: Any, split: str) -> dict[str, Any]:
        """Extra numbers for `mtfuse data check` on one encoded split (generation: target lengths)."""
        return {}

    def metric_fits(self, metric: str) -> bool:
        return metric in self.metrics_allowed

    def metric_fits_labels(self, metric: str, labels: list[str] | None) -> bool:
        """Whether ``metric`` can score a task with these labels (binary F1 needs exactly two)."""
        return True

    # -- type-owned encoding, batching, prediction and scoring ----------------------------------------
    # A type whose examples do not fit the generic path (one or more sequences per example, one label or
    # one label per word) overrides these; each returns None to keep the generic path. Extractive QA cuts a
    # long context into several windows, generation tokenises a target, SRL marks a predicate.
    def encode_rows(
        self, rows: list[dict], task: Any, split: str, tokenizing: Any, with_labels: bool
    ) -> tuple[Any, list[Any] | None] | None:
        """``(Encoded, gold per example)`` for rows of one split (``mtfuse.tasks.features.encode_rows``);
        type-owned arrays go in ``Encoded.extra``."""
        return None

    def collate(
        self, enc: Any, idx: list[int], pad_id: int, draw: tuple[int, ...] | None = None
    ) -> dict[str, torch.Tensor] | None:
        """A batch of the encoded sequences ``idx`` (``mtfuse.tasks.features.collate``). Keys beyond the
        encoder's inputs reach heads that declare ``takes_batch``. ``draw``: for a training batch, the train
        stream's (seed, epoch), from which a type with random batches (masked LM's masks) draws them, so that
        a resumed run draws what an uninterrupted one does; None: the fixed batch (evaluation)."""
        return None

    def predict_split(
        self,
        model: Any,
        task: Any,
        enc: Any,
        batch_size: int,
        device: torch.device,
        pad_id: int,
        autocast: Any,
    ) -> tuple[list[Any], list[Any]] | None:
        """``(predictions, probabilities)`` per example (``mtfuse.evaluate.predict_encoded``): generation
        decodes, extractive QA joins the windows of one example."""
        return None

    def score(self, task: Any, preds: list[Any], gold: list[Any]) -> dict[str, float] | None:
        """The task's metrics (0-100) from predictions and gold (``mtfuse.evaluate.score``)."""
        return None

    # -- type-owned options and unseen labels ------------------------------------------------------------
    #: the TaskConfig section holding this type's own options (None: it has none); the plan refuses the
    #: section on tasks of other types
    options_field: str | None = None

    def loss_options(self, cfg: Any) -> dict[str, Any]:
        """Keyword arguments for :meth:`loss` from the task's config (an intent_slots task's slot_weight)."""
        return {}

    def unseen_labels_note(self, cfg: Any) -> str | None:
        """What train and evaluate do with dev / test labels that train lacks, for `mtfuse data check`; None:
        they refuse them (the default)."""
        return None

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
    #: outputs are texts (generation): ensembles select among the members' texts
    #: (``mtfuse.fusion.ensemble.texts``) instead of fusing ``[units, C]`` rows; no stacking
    fused_as_text = False
    #: members' outputs can be fused at all; False (masked_lm: predictions of masked tokens, not of a task's
    #: labels): ensembles and stacks leave the task out, and refuse it when asked for it by name
    fusable = True

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

    def decide_examples(self, out: np.ndarray, example: np.ndarray) -> np.ndarray:
        """Decisions from fused outputs knowing each unit's example ``[U]`` (a span type decodes one span per
        example); by default :meth:`decide`, unit by unit."""
        return self.decide(out)

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
