"""Joint intent detection and slot filling (ATIS, SNIPS): one intent per utterance and one IOB slot tag per word,
from one head on the shared encoder (Goo et al. 2018, "Slot-Gated Modeling for Joint Slot Filling and Intent
Prediction", NAACL; the joint loss of Liu & Lane 2016, "Attention-Based Recurrent Neural Network Models for
Joint Intent Detection and Slot Filling"; BERT as the encoder: Chen et al. 2019, "BERT for Joint Intent
Classification and Slot Filling").

Label: one value per example, ``{"intent": "atis_flight", "slots": ["O", "B-fromloc.city_name", ...]}`` (the
``atis`` reader builds it; in jsonl it is an object, ``slots`` a list or a space-separated string). An intent
joined by ``#`` (``atis_flight#atis_airfare``) is a class of its own, as Goo et al. and the papers that report on
this split do: accuracy stays comparable with theirs, and the few multi-intent rows (23 of 4,478 in train) are
too rare to learn each intent's share of a multi-label decision.

One label space for both outputs: the vocabulary is ``intent:<name>`` labels, then ``slot:<tag>`` labels (each
block sorted), so every generic path (label checks, heads.json, data check counts, ensemble alignment) sees one
list. The ``intent_slots`` head returns one tensor ``[B, T, C]`` shaped as a token task's: position 0 (the
tokenizer's leading special token, never a word) carries the intent logits, every other position the slot
logits, each masked to its own block of columns. Training loss, autocast, Fisher merging, AdaMerging and
export then handle a single tensor, and ensembles fuse one distribution per unit: the intent, then each word.

Labels that train never has (ATIS test: intent ``atis_day_name``, three new ``#`` combinations, six slot
tags) follow ``tasks.<name>.intent_slots.unseen_labels``: ``unseen_class`` (default) maps them to designated
classes the head never predicts (``intent:<unseen>``, ``slot:B-<unseen>`` / ``slot:I-<unseen>``, keeping the
B/I prefix so that a gold entity is still counted and missed), so they always count as errors and the test set
keeps its 893 utterances as papers report (SlotGated-SLU maps them to ``_UNK``); ``error`` refuses them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.errors import ConfigError, DataError
from mtfuse.tasks.types.base import IGNORE_INDEX, _index, _label_probs, register
from mtfuse.tasks.types.token import TokenClassification, _sentences

INTENT, SLOT = "intent:", "slot:"
UNSEEN = "<unseen>"
#: designated classes for labels train never has; the head never predicts them
UNSEEN_LABELS = (f"{INTENT}{UNSEEN}", f"{SLOT}B-{UNSEEN}", f"{SLOT}I-{UNSEEN}")
OUTSIDE = f"{SLOT}O"


def options(cfg: Any) -> Any:
    """The task's ``intent_slots`` section, defaults filled in."""
    from mtfuse.config import IntentSlotsOptions

    return getattr(cfg, "intent_slots", None) or IntentSlotsOptions()


def unseen_label(name: str) -> str:
    """The designated class an unknown label stands for (the B/I prefix of a slot tag kept)."""
    if name.startswith(INTENT):
        return UNSEEN_LABELS[0]
    tag = name[len(SLOT) :]
    return UNSEEN_LABELS[2] if tag.startswith("I-") else UNSEEN_LABELS[1]


def frames(names: list[list[str]]) -> list[list[str]]:
    """Joint label names per example -> ``[intent, tag, tag, ...]`` without the block prefixes: what the
    intent_slots metrics take."""
    return [[n.split(":", 1)[1] for n in ex] for ex in names]


@register("intent_slots")
class IntentSlots(TokenClassification):
    """An intent per utterance (pooled output) and an IOB slot tag per word (its first sub-word); the loss is
    ``CE(intent) + slot_weight * CE(slots)``. Text field: the words; label: ``{intent, slots}``."""

    name = "intent_slots"
    head = "intent_slots"
    default_metrics = ("intent_accuracy", "slot_f1", "frame_accuracy")
    metrics_allowed = default_metrics
    options_field = "intent_slots"

    # -- labels: one list, the intents first ------------------------------------------------------------
    def map_labels(self, rows: list[dict], field: str, cfg: Any) -> list[dict]:
        """The intent's ids and each slot tag's id replaced by their names, through ``intent_slots.intent_map``
        and ``intent_slots.slot_map`` (``data.label_map``'s formats); ``data.label_map`` is refused, since one
        map cannot tell an intent id from a slot id."""
        from mtfuse.tasks.readers import apply_label_map, label_map

        if cfg.data.label_map is not None:
            raise ConfigError(
                f"task '{cfg.name}': data.label_map maps one kind of id, and an intent_slots label has two; "
                f"give tasks.{cfg.name}.intent_slots.intent_map and / or .slot_map instead"
            )
        o = options(cfg)
        maps = [
            (key, m, label_map(cfg.data.model_copy(update={"label_map": m})))
            for key, m in (("intent", o.intent_map), ("slots", o.slot_map))
            if m is not None
        ]
        if not maps:
            return rows
        out = []
        for row in rows:
            value = row.get(field)
            if not isinstance(value, dict):  # raw_labels names the row
                out.append(row)
                continue
            value = dict(value)
            for key, source, mapping in maps:
                if key in value:
                    name = f"{field}.{key}"  # the error names the part of the label: 'label.slots'
                    tmp = [{"_where": row["_where"], name: value[key]}]
                    value[key] = apply_label_map(tmp, name, mapping, source, many=key == "slots")[0][name]
            out.append({**row, field: value})
        return out

    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        """``[intent:<name>, slot:<tag>, ...]`` of one ``{"intent": ..., "slots": [...]}`` value."""
        if not isinstance(value, dict) or "intent" not in value or "slots" not in value:
            raise DataError(
                f'{where} (field \'{field}\'): expected {{"intent": ..., "slots": [...]}} (an intent and one '
                f"slot tag per word), got {str(value)[:60]!r}"
            )
        intent, slots = value["intent"], value["slots"]
        if not isinstance(intent, str) or not intent.strip():
            raise DataError(f"{where} (field '{field}'): empty or non-string intent {intent!r}")
        if isinstance(slots, str):
            slots = slots.split()
        if not isinstance(slots, (list, tuple)) or not all(isinstance(t, str) and t.strip() for t in slots):
            raise DataError(
                f"{where} (field '{field}'): 'slots' must be a list of tags (or one string of them)"
            )
        return [INTENT + intent.strip(), *(SLOT + t.strip() for t in slots)]

    def vocab(self, train_rows: list[dict], field: str, fixed: list[str] | None) -> list[str]:
        if fixed is not None:
            bad = [lab for lab in fixed if not lab.startswith((INTENT, SLOT))]
            if bad:
                raise ConfigError(
                    f"labels: '{bad[0]}' is neither 'intent:<name>' nor 'slot:<tag>' (an intent_slots task "
                    "lists its intents and slot tags in one list, each with its prefix)"
                )
            seen = list(dict.fromkeys(fixed))
        else:
            names: set[str] = set()
            for row in train_rows:
                names.update(self.raw_labels(row.get(field), row["_where"], field))
            seen = sorted(names | set(UNSEEN_LABELS))
        seen += [u for u in UNSEEN_LABELS if u not in seen]  # a fixed list may lack them
        return [x for x in seen if x.startswith(INTENT)] + [x for x in seen if x.startswith(SLOT)]

    def encode_label(
        self, value: Any, vocab: list[str] | None, where: str, field: str, split: str
    ) -> np.ndarray:
        """Joint indices ``[intent, slot per word]``; an unknown label is its designated unseen class."""
        assert vocab is not None
        names = self.raw_labels(value, where, field)
        return np.array([_known(n, vocab) for n in names], dtype=np.int64)

    def num_outputs(self, vocab: list[str] | None) -> int:
        assert vocab is not None
        return len(vocab)

    # -- encoding: the words, the intent at position 0, each slot on its word's first sub-word ----------
    def encode_rows(
        self, rows: list[dict], task: Any, split: str, tokenizing: Any, with_labels: bool
    ) -> tuple[Any, list[Any] | None]:
        from mtfuse.tasks.features import align_token_labels, texts_of

        texts = texts_of(rows, task.text_fields, True)
        enc = tokenizing.encode(texts, True, task.cfg.max_length)
        for row, wid in zip(rows, enc.word_ids, strict=True):
            if len(wid) and wid[0] >= 0:  # the intent needs a position that is no word's
                raise ConfigError(
                    f"{row['_where']}: task '{task.name}' (intent_slots) needs a tokenizer that starts every "
                    "sequence with a special token ([CLS], <s>); this one starts with a word"
                )
        if not with_labels:
            return enc, None
        policy = options(task.cfg).unseen_labels
        vocab = task.labels
        labels, gold = [], []
        for i, row in enumerate(rows):
            names = self.raw_labels(row[task.label_field], row["_where"], task.label_field)
            if len(names) - 1 != len(texts[i]):
                raise DataError(
                    f"{row['_where']}: {len(texts[i])} words but {len(names) - 1} slot tags "
                    f"(field '{task.label_field}')"
                )
            if policy == "error":
                for n in names:
                    _index(n, vocab, row["_where"], task.label_field, split)
            # an unseen label is never a training target (IGNORE_INDEX): scoring maps it to its unseen class
            idx = np.array([vocab.index(n) if n in vocab else IGNORE_INDEX for n in names], dtype=np.int64)
            y = align_token_labels(enc.word_ids[i], idx[1:])
            y[0] = idx[0]
            labels.append(y)
            gold.append(names)  # as written: data check counts the unseen names
        enc.labels = labels
        return enc, gold

    def unseen_labels_note(self, cfg: Any) -> str | None:
        if options(cfg).unseen_labels == "error":
            return None
        return (
            f"train and evaluate map them to designated classes the head never predicts ({', '.join(UNSEEN_LABELS)}; "
            f"tasks.{cfg.name}.intent_slots.unseen_labels: unseen_class): they count as errors, no example is dropped"
        )

    def loss_options(self, cfg: Any) -> dict[str, Any]:
        return {"slot_weight": options(cfg).slot_weight}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, slot_weight: float = 1.0) -> torch.Tensor:
        """Mean intent cross-entropy (position 0) + ``slot_weight`` * mean slot cross-entropy (labelled words)."""
        x = logits.float()
        intent = _mean_ce(x[:, 0], labels[:, 0])
        slots = _mean_ce(x[:, 1:].flatten(0, 1), labels[:, 1:].flatten())
        return intent + slot_weight * slots

    # -- prediction: the intent, then one distribution per word -----------------------------------------
    def predict_split(
        self,
        model: Any,
        task: Any,
        enc: Any,
        batch_size: int,
        device: torch.device,
        pad_id: int,
        autocast: Any,
    ) -> tuple[list[Any], list[Any]]:
        """Per example ``[intent, slot per word]`` joint indices and their ``[1 + words, C]`` distributions;
        words past ``max_length`` get ``O`` (as the token type's ``word_level``)."""
        from mtfuse.evaluate import word_level
        from mtfuse.tasks.features import collate

        labels = task.labels or []
        fill = labels.index(OUTSIDE) if OUTSIDE in labels else len(labels) - 1
        was_training = model.training
        model.eval()
        order = np.argsort(-enc.lengths(), kind="stable")
        preds: list[Any] = [None] * len(enc)
        probs: list[Any] = [None] * len(enc)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = collate(enc, idx, pad_id, self)
                batch.pop("labels", None)
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast():
                    logits = model(task.name, batch)
                p, pr = self.predict(logits)
                for r, i in enumerate(idx):
                    n_words = enc.n_words[i] if enc.n_words is not None else None
                    sp, spr = word_level(enc.word_ids[i], p[r], pr[r], n_words, fill)
                    preds[i] = np.array([p[r, 0], *sp], dtype=np.int64)
                    probs[i] = np.stack([pr[r, 0], *spr]) if spr else pr[r, :1]
        model.train(was_training)
        return preds, probs

    def score(self, task: Any, preds: list[Any], gold: list[Any]) -> dict[str, float]:
        from mtfuse.metrics import METRICS

        labels = task.labels or []
        p = frames([[labels[j] for j in x] for x in preds])
        g = frames([[n if n in labels else unseen_label(n) for n in ex] for ex in gold])
        return {m: METRICS.get(m)(p, g) for m in task.metrics}

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """The most frequent train intent, and ``O`` on every word."""
        assert labels is not None
        top = Counter(ex[0] for ex in gold_train).most_common(1)[0][0]
        return [np.array([labels.index(top)] + [labels.index(OUTSIDE)] * (len(g) - 1)) for g in gold]

    # -- records: {intent, intent_probs, tags, probs (one dict per word)} -------------------------------
    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        """Decisions are read from ``prob`` within each block (the head masks the other block anyway)."""
        assert labels is not None
        ii, si = _blocks(labels)
        prob = np.asarray(prob, dtype=np.float64)
        names_i = [labels[j][len(INTENT) :] for j in ii]
        names_s = [labels[j][len(SLOT) :] for j in si]
        return {
            "intent": names_i[int(prob[0, ii].argmax())],
            "intent_probs": _label_probs(names_i, prob[0, ii]),
            "tags": [names_s[int(w[si].argmax())] for w in prob[1:]],
            "probs": [_label_probs(names_s, w[si]) for w in prob[1:]],
        }

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        names = [labels[int(g)] if isinstance(g, (int, np.integer)) else str(g) for g in gold]  # type: ignore[index]
        ex = frames([names])[0]
        return {"intent": ex[0], "slots": ex[1:]}

    # -- fusion: unit 0 the intent, then each word ------------------------------------------------------
    def outputs(self, record: dict[str, Any], labels: list[str] | None, where: str) -> np.ndarray:
        assert labels is not None
        ii, si = _blocks(labels)
        ip, words = record.get("intent_probs"), record.get("probs")
        if not isinstance(ip, dict) or not isinstance(words, list):
            raise DataError(
                f"{where}: an intent_slots record needs 'intent_probs' (a dict) and 'probs' (a list)"
            )
        out = np.zeros((1 + len(words), len(labels)), dtype=np.float64)
        out[0, ii] = _row(ip, [labels[j][len(INTENT) :] for j in ii], where)
        names_s = [labels[j][len(SLOT) :] for j in si]
        for k, w in enumerate(words):
            out[1 + k, si] = _row(w, names_s, where)
        return out

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        assert labels is not None
        if not isinstance(gold, dict) or not isinstance(gold.get("slots"), list):
            raise DataError(f"{where}: gold is not {{intent, slots}}")
        names = [INTENT + str(gold.get("intent")), *(SLOT + str(t) for t in gold["slots"])]
        return np.array([_known(n, labels) for n in names[:units]], dtype=np.int64)

    def metric_inputs(
        self, decisions: np.ndarray, targets: np.ndarray, example: np.ndarray, labels: list[str] | None
    ) -> tuple[Any, Any]:
        """Frames ``[intent, tag, ...]`` per example (a decision outside its unit's block is simply wrong)."""
        assert labels is not None
        lab = np.asarray(labels, dtype=object)
        return frames(_sentences(lab[decisions], example)), frames(_sentences(lab[targets], example))

    def example_record(
        self, decisions: np.ndarray, outputs: np.ndarray, labels: list[str] | None
    ) -> dict[str, Any]:
        return self.record(decisions, outputs, labels)

    def same_gold(self, a: Any, b: Any) -> bool:
        return bool(a == b)


def _known(name: str, vocab: list[str]) -> int:
    return vocab.index(name) if name in vocab else vocab.index(unseen_label(name))


def _blocks(labels: list[str]) -> tuple[list[int], list[int]]:
    ii = [j for j, x in enumerate(labels) if x.startswith(INTENT)]
    si = [j for j, x in enumerate(labels) if x.startswith(SLOT)]
    return ii, si


def _row(d: Any, names: list[str], where: str) -> np.ndarray:
    if not isinstance(d, dict) or set(d) != set(names):
        raise DataError(
            f"{where}: probabilities over {sorted(d) if isinstance(d, dict) else d!r}, expected {names}"
        )
    return np.array([float(d[n]) for n in names], dtype=np.float64)


def _mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled rows; 0 (not NaN) when none is labelled."""
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)
