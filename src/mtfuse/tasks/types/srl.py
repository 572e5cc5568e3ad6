"""Dependency-based semantic role labelling (PropBank roles on head words, CoNLL-2009 style): one example per
predicate, a role per word.

An example is a sentence's words and the index of one predicate (text fields ``[words, predicate]``; the
``conllu_srl`` reader gives them). The predicate is marked for the encoder by ``token_type_ids = 1`` on its
sub-words, 0 elsewhere, as AllenNLP's BERT SRL model feeds its verb indicator (Shi & Lin 2019, "Simple BERT
Models for Relation Extraction and Semantic Role Labeling", arXiv:1904.05255): BERT-style encoders have two
token types, so the mark needs no new vocabulary (marker tokens would resize the shared embedding matrix of
every task and of every model to be merged) and leaves the words' sub-word positions as they are. The ``srl``
head (``mtfuse.model.heads.SrlHead``) concatenates each word's state with the predicate's, as Shi & Lin do, and
the role is read on each word's first sub-word, as in token classification.

Roles are scored as CoNLL-2009 scores semantic dependencies, argument by argument: labelled precision / recall
/ F1 over (predicate, argument head word, role) triples, micro-averaged over the corpus (``srl_f1`` in
``mtfuse.metrics``). The predicate's own ``V`` is not an argument; predicate senses (rolesets) are given, not
predicted, so unlike CoNLL-2009's semantic F1 no sense is scored. A role of an evaluation split that train
never has stays in the gold (the argument is missed, as a scorer counts it) and is ignored by the loss.

Fusion is that of token classification: ensembles average the role distribution of each word; merges keep the
heads. Records carry the roles per word (``tags``), the ``predicate`` index and the ``roleset``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mtfuse.errors import ConfigError, DataError
from mtfuse.tasks.types.base import IGNORE_INDEX, _gold_index, register
from mtfuse.tasks.types.token import TokenClassification

OUTSIDE = "O"  # no role
PREDICATE = "V"  # the predicate's own label: not an argument, not scored
NO_ROLESET = "_"


def predicate_indicator(word_ids: np.ndarray, predicate: int) -> np.ndarray:
    """``token_type_ids``: 1 on every sub-word of word ``predicate``, 0 elsewhere (specials included)."""
    return (np.asarray(word_ids) == predicate).astype(np.int64)


def predicate_index(value: Any, n_words: int, where: str, field: str) -> int:
    """The predicate's 0-based word index from a row (an int, or its digits as a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise DataError(f"{where} (field '{field}'): expected the predicate's word index, got {value!r}")
    try:
        k = int(str(value).strip()) if not isinstance(value, float) or value.is_integer() else -1
    except ValueError:
        k = -1
    if not 0 <= k < n_words:
        raise DataError(
            f"{where} (field '{field}'): predicate index {value!r} is not a word of the {n_words}-word "
            f"sentence (0-based)"
        )
    return k


@register("srl")
class SemanticRoles(TokenClassification):
    """A role per word for one marked predicate; text fields ``[words, predicate]``, label field: the roles."""

    name = "srl"
    head = "srl"
    text_fields_allowed = (2,)
    default_metrics = ("srl_f1",)
    metrics_allowed = ("srl_f1", "srl_precision", "srl_recall")

    # -- encoding: the words as a token task, the predicate's sub-words as token type 1 --------------------
    def encode_rows(
        self, rows: list[dict], task: Any, split: str, tokenizing: Any, with_labels: bool
    ) -> tuple[Any, list[Any] | None]:
        from mtfuse.tasks.features import align_token_labels, texts_of  # features imports the types

        words_field, pred_field = task.text_fields
        texts = texts_of(rows, [words_field], True)
        preds = [
            predicate_index(row[pred_field], len(t), row["_where"], pred_field)
            for row, t in zip(rows, texts, strict=True)
        ]
        enc = tokenizing.encode(texts, True, task.cfg.max_length)
        if enc.token_type_ids is None:
            raise ConfigError(
                f"task '{task.name}' (type srl) marks the predicate with token_type_ids, which this model's "
                f"tokenizer does not give (e.g. RoBERTa); use a BERT-style encoder with two token types"
            )
        enc.token_type_ids = [predicate_indicator(w, p) for w, p in zip(enc.word_ids, preds, strict=True)]
        enc.extra["predicate"] = np.array(preds, dtype=np.int64)
        enc.extra["roleset"] = [str(row.get("roleset") or NO_ROLESET) for row in rows]
        if not with_labels:
            return enc, None
        index = {lab: j for j, lab in enumerate(task.labels or [])}
        labels, gold = [], []
        for i, row in enumerate(rows):
            roles = self.raw_labels(row[task.label_field], row["_where"], task.label_field)
            if len(roles) != len(texts[i]):
                raise DataError(
                    f"{row['_where']}: {len(texts[i])} words but {len(roles)} roles (field '{task.label_field}')"
                )
            if split == "train":  # train roles make the vocabulary: one outside it is an error
                y = self.encode_label(roles, task.labels, row["_where"], task.label_field, split)
            else:  # a role train never has: scored as missed, not trained on
                y = np.array([index.get(r, IGNORE_INDEX) for r in roles], dtype=np.int64)
            gold.append(roles)
            labels.append(align_token_labels(enc.word_ids[i], y))
        enc.labels = labels
        return enc, gold

    # -- prediction: the token path, with the predicate and roleset of each example ------------------------
    def predict_split(
        self, model: Any, task: Any, enc: Any, batch_size: int, device: Any, pad_id: int, autocast: Any
    ) -> tuple[list[Any], list[Any]]:
        from mtfuse.evaluate import predict_encoded

        plain = dataclasses.replace(task, type=_TOKEN)  # the generic token path, which this type keeps
        preds, probs = predict_encoded(model, plain, enc, batch_size, device, pad_id, autocast)
        extra = enc.extra
        out = [
            {"roles": p, "predicate": int(extra["predicate"][i]), "roleset": extra["roleset"][i]}
            if "predicate" in extra
            else p
            for i, p in enumerate(preds)
        ]
        return out, probs

    def unseen_labels_note(self, cfg: Any) -> str | None:
        return "evaluate keeps them in the gold, so they count as missed arguments (the loss ignores them)"

    def score(self, task: Any, preds: list[Any], gold: list[Any]) -> dict[str, float]:
        from mtfuse.metrics import METRICS

        labels = task.labels or []
        p_roles = [[labels[j] for j in _roles(p)] for p in preds]
        g_roles = [list(g) for g in gold]
        short = [i for i, (p, g) in enumerate(zip(p_roles, g_roles, strict=True)) if len(p) != len(g)]
        if short:
            raise ValueError(
                f"task '{task.name}': predictions and gold differ in length for examples {short[:5]}"
            )
        return {m: METRICS.get(m)(p_roles, g_roles) for m in task.metrics}

    # -- records: roles per word, the predicate and its roleset -------------------------------------------
    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        rec = super().record(_roles(pred), prob, labels)
        if isinstance(pred, dict):
            rec["predicate"], rec["roleset"] = pred["predicate"], pred["roleset"]
        return rec

    def complete_record(self, rec: dict[str, Any], member_rec: dict[str, Any]) -> dict[str, Any]:
        rec = super().complete_record(rec, member_rec)
        for key in ("predicate", "roleset"):
            if key in member_rec:
                rec[key] = member_rec[key]
        return rec

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        """A gold role outside the labels (train never had it) is a target of 'O': a fused argument can only
        be one of the labels."""
        assert labels is not None
        known = set(labels)
        fill = OUTSIDE if OUTSIDE in known else None
        tags = [t if t in known or fill is None else fill for t in gold[:units]]
        return np.array([_gold_index(labels, t, where) for t in tags], dtype=np.int64)


_TOKEN = TokenClassification()


def _roles(pred: Any) -> Any:
    return pred["roles"] if isinstance(pred, dict) else pred
