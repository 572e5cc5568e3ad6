"""Extractive span question answering (SQuAD v1.1, Rajpurkar et al. 2016; the BERT recipe of Devlin et al. 2019
and Hugging Face ``run_qa``): a question, a context, and the answer as a span of the context.

* **Encoding** (:meth:`SpanQA.encode_rows`): question + context pairs, ``truncation="only_second"``; a long
  context is cut into overflowing windows of ``max_length`` tokens that share ``span_qa.doc_stride`` tokens.
  Windows are the training units; ``Encoded.extra`` keeps each window's example, its tokens' character
  offsets in the context (-1 outside it) and its context mask, plus each example's context. A window's label
  is the (start, end) token of the first gold answer when the window holds all of it, else (0, 0): the [CLS]
  token, as ``run_qa`` does.
* **Head** ``span_qa``: start / end logits on every position; the loss is the mean of the start and end
  cross-entropies.
* **Decoding** (:meth:`SpanQA.predict_split`): each window's start and end softmax over its positions (the
  [CLS] token takes the mass of a window that does not hold the answer), moved onto the context's *words*
  (``\\w+`` runs and single punctuation marks, so that an answer never ends on a trailing comma): a word's
  probability in a window is the sum of its sub-tokens', across windows the highest, renormalised over the
  context. The answer is the best of the ``n_best`` x ``n_best`` (start, end) word pairs with end >= start
  and at most ``max_answer_length`` words, by ``p_start * p_end``, cut from the context by character.
* **Records**: ``answer``, ``start`` / ``end`` (character offsets, end exclusive), ``score``, ``words`` (the
  first and last word), ``context``, and ``probs`` (``start`` / ``end``: one probability per word).
* **Fusion**: the unit is a context word (tokenizer-independent, so members with different tokenizers align)
  and its two outputs are its start and end probability: ensembles average the members' start / end
  distributions word by word and decode the fused ones as above (:meth:`complete_record` cuts the answer
  from the context a member's record carries). Gold becomes start / end flags per word (every gold answer);
  the NLL is the mean -log p of the gold start and end words; stacking fits one logistic regression per
  column (``per_label``); a vote is a word holding more than half a member's start (end) probability.
* **Metrics**: SQuAD v1.1 exact match and F1 (``mtfuse.metrics.exact_match`` / ``squad_f1``), maximum over
  the gold answers.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.batching import pad_inputs
from mtfuse.errors import DataError
from mtfuse.tasks.types.base import _EPS, TaskType, _categorical_ll, register

_WORD = re.compile(r"\w+|[^\w\s]")
_DIGITS = 6  # probabilities as written in records


def words_of(context: str) -> np.ndarray:
    """The context's words as character spans ``[W, 2]`` (end exclusive): ``\\w+`` runs and single marks."""
    spans = [m.span() for m in _WORD.finditer(context)]
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def char_to_word(context: str, words: np.ndarray) -> np.ndarray:
    """Each character's word index, -1 for white space."""
    out = np.full(len(context), -1, dtype=np.int64)
    for w, (a, b) in enumerate(words):
        out[a:b] = w
    return out


def check_answers(answers: Any, context: str, where: str, qid: Any = None) -> list[dict[str, Any]]:
    """Gold answers as ``[{"text", "answer_start"}]``, each checked against the context."""
    who = f"{where} (question {qid})" if qid is not None else where
    if isinstance(answers, dict):  # Hugging Face squad columns: {"text": [...], "answer_start": [...]}
        texts, starts = answers.get("text"), answers.get("answer_start")
        if isinstance(texts, list) and isinstance(starts, list) and len(texts) == len(starts):
            answers = [{"text": t, "answer_start": s} for t, s in zip(texts, starts, strict=True)]
    if not isinstance(answers, list) or not answers:
        raise DataError(f"{who}: expected a non-empty list of answers [{{text, answer_start}}]")
    out = []
    for k, a in enumerate(answers):
        text = a.get("text") if isinstance(a, dict) else None
        start = a.get("answer_start") if isinstance(a, dict) else None
        if (
            not isinstance(text, str)
            or not text.strip()
            or isinstance(start, bool)
            or not isinstance(start, int)
        ):
            raise DataError(f"{who}: answer {k} needs a non-empty 'text' and an integer 'answer_start'")
        found = context[start : start + len(text)] if 0 <= start else ""
        if found != text:
            raise DataError(
                f"{who}: answer {k} {text!r} does not match the context at answer_start {start} "
                f"(the context there reads {found!r})"
            )
        out.append({"text": text, "answer_start": start})
    return out


def best_span(ps: np.ndarray, pe: np.ndarray, n_best: int, max_len: int) -> tuple[int, int, float]:
    """The (start, end) word pair with the highest ``ps[s] * pe[e]`` among the ``n_best`` most likely starts and
    ends, with ``s <= e < s + max_len``; (-1, -1, 0) for a context without words."""
    if len(ps) == 0:
        return -1, -1, 0.0
    starts = np.argsort(-ps, kind="stable")[:n_best]
    ends = np.argsort(-pe, kind="stable")[:n_best]
    best = (-1, -1, -1.0)
    for s in starts:
        for e in ends:
            if s <= e < s + max_len and ps[s] * pe[e] > best[2]:
                best = (int(s), int(e), float(ps[s] * pe[e]))
    if best[0] < 0:  # no pair fits: the most likely start alone
        s = int(starts[0])
        best = (s, s, float(ps[s] * pe[s]))
    return best


@register("span_qa")
class SpanQA(TaskType):
    """Extractive QA: text fields ``[question, context]``, the label a list of ``{text, answer_start}``."""

    name = "span_qa"
    head = "span_qa"
    text_fields_allowed = (2,)
    default_metrics = ("exact_match", "squad_f1")
    metrics_allowed = ("exact_match", "squad_f1")
    has_vocab = False
    unit = "word"
    stack_learner = "per_label"

    # -- labels ----------------------------------------------------------------------------------------
    def num_outputs(self, vocab: list[str] | None) -> int:
        return 2  # start, end

    def encode_label(self, value: Any, vocab: list[str] | None, where: str, field: str, split: str) -> Any:
        """The gold answers as checked dicts (the context is checked with them in :meth:`encode_rows`)."""
        if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
            raise DataError(f"{where} (field '{field}'): expected a list of {{text, answer_start}} answers")
        return value

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """The trivial baseline: the context's first sentence (up to the first '. ', '! ' or '? ')."""
        return [{"answer": first_sentence(g["context"])} for g in gold]

    # -- encoding: question + context windows ----------------------------------------------------------
    def encode_rows(
        self, rows: list[dict], task: Any, split: str, tokenizing: Any, with_labels: bool
    ) -> tuple[Any, list[Any] | None]:
        from mtfuse.tasks.features import Encoded

        qf, cf = task.text_fields
        questions, contexts, answers = [], [], []
        for row in rows:
            q, c = row[qf], row[cf]
            for f, v in ((qf, q), (cf, c)):
                if not isinstance(v, str) or not v.strip():
                    raise DataError(f"{row['_where']} (field '{f}'): expected a non-empty string")
            questions.append(q.strip())
            contexts.append(c)
            if with_labels:
                answers.append(check_answers(row[task.label_field], c, row["_where"], row.get("id")))
        opts = _options(task)
        stride = opts.doc_stride or task.cfg.max_length // 3
        try:
            out = tokenizing.tok(
                questions,
                contexts,
                truncation="only_second",
                max_length=task.cfg.max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        except Exception as e:  # a question longer than a window, a stride that leaves no context
            raise DataError(
                f"task '{task.name}' split '{split}': cannot cut the contexts into windows of max_length "
                f"{task.cfg.max_length} with doc_stride {stride} ({str(e).splitlines()[0]}); raise "
                f"max_length or lower span_qa.doc_stride"
            ) from None
        example = np.asarray(out["overflow_to_sample_mapping"], dtype=np.int64)
        ids, tts, offsets, masks, labels = [], [], [], [], []
        for w in range(len(out["input_ids"])):
            seq = out.sequence_ids(w)
            ctx = np.array([s == 1 for s in seq], dtype=bool)
            off = np.array(out["offset_mapping"][w], dtype=np.int64).reshape(-1, 2)
            off[~ctx] = -1
            ids.append(np.array(out["input_ids"][w], dtype=np.int64))
            if "token_type_ids" in out:
                tts.append(np.array(out["token_type_ids"][w], dtype=np.int64))
            offsets.append(off)
            masks.append(ctx)
            if with_labels:
                first = answers[example[w]][0]
                a = first["answer_start"]
                labels.append(np.array(answer_tokens(off, ctx, a, a + len(first["text"])), dtype=np.int64))
        enc = Encoded(ids, tts or None, labels if with_labels else None)
        enc.extra = {"example": example, "offsets": offsets, "context_mask": masks, "contexts": contexts}
        if not with_labels:
            return enc, None
        return enc, [{"answers": a, "context": c} for a, c in zip(answers, contexts, strict=True)]

    def collate(
        self, enc: Any, idx: list[int], pad_id: int, draw: tuple[int, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        batch = pad_inputs(enc.input_ids, enc.token_type_ids, idx, pad_id)
        if enc.labels is not None:
            batch["labels"] = torch.from_numpy(np.stack([enc.labels[i] for i in idx]))
        return batch

    def collate_labels(self, labels: list[Any], seq_len: int) -> torch.Tensor:
        return torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1, 2))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean of the start and end cross-entropies over the window's positions (BertForQuestionAnswering)."""
        logits = logits.float()
        return (
            F.cross_entropy(logits[..., 0], labels[:, 0]) + F.cross_entropy(logits[..., 1], labels[:, 1])
        ) / 2

    # -- prediction: windows -> word distributions -> the best span ------------------------------------
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
        was_training = model.training
        model.eval()
        window_probs: list[np.ndarray] = [None] * len(enc)  # type: ignore[list-item]
        order = np.argsort(-enc.lengths(), kind="stable")
        with torch.no_grad():
            for a in range(0, len(order), batch_size):
                idx = [int(i) for i in order[a : a + batch_size]]
                batch = self.collate(enc, idx, pad_id)
                batch.pop("labels", None)
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast():
                    logits = model(task.name, batch)
                probs = torch.softmax(logits.float(), dim=1).cpu().numpy()  # over the window's positions
                for r, i in enumerate(idx):
                    window_probs[i] = probs[r, : len(enc.input_ids[i])]
        model.train(was_training)
        opts = _options(task)
        contexts = enc.extra["contexts"]
        by_example: list[list[int]] = [[] for _ in contexts]
        for w, i in enumerate(enc.extra["example"]):
            by_example[int(i)].append(w)
        preds, probs_out = [], []
        for i, context in enumerate(contexts):
            words = words_of(context)
            dist = word_distributions(
                [window_probs[w] for w in by_example[i]],
                [enc.extra["offsets"][w] for w in by_example[i]],
                char_to_word(context, words),
                len(words),
            )
            dist = np.round(dist, _DIGITS)  # decode what the record holds, so fusion reproduces it
            preds.append(_answer(dist, context, words, opts.n_best, opts.max_answer_length))
            probs_out.append(dist)
        return preds, probs_out

    def score(self, task: Any, preds: list[Any], gold: list[Any]) -> dict[str, float]:
        from mtfuse.metrics import METRICS

        texts = [p["answer"] for p in preds]
        golds = [[a["text"] for a in g["answers"]] for g in gold]
        return {m: METRICS.get(m)(texts, golds) for m in task.metrics}

    # -- records ---------------------------------------------------------------------------------------
    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        return {**pred, "probs": _probs_record(np.asarray(prob))}

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        return gold  # {"answers": [{text, answer_start}], "context"}: fusion cuts and scores spans from it

    # -- fusion: per-word start / end probabilities ------------------------------------------------------
    def outputs(self, record: dict[str, Any], labels: list[str] | None, where: str) -> np.ndarray:
        probs = record.get("probs")
        if not isinstance(probs, dict) or not all(isinstance(probs.get(k), list) for k in ("start", "end")):
            raise DataError(
                f"{where}: 'probs' is not {{start: [...], end: [...]}} (one probability per word)"
            )
        if len(probs["start"]) != len(probs["end"]):
            raise DataError(
                f"{where}: 'probs' has {len(probs['start'])} start but {len(probs['end'])} end words"
            )
        return np.array([probs["start"], probs["end"]], dtype=np.float64).T.reshape(-1, 2)

    def same_gold(self, a: Any, b: Any) -> bool:
        return bool(a == b)

    def targets(self, gold: Any, labels: list[str] | None, units: int, where: str) -> np.ndarray:
        """``[units, 3]`` objects: the start and end flags of each word (1 where a gold answer starts / ends)
        and, in the third column, the example's context, words and gold texts (what the metrics read)."""
        if not isinstance(gold, dict) or "context" not in gold or "answers" not in gold:
            raise DataError(f"{where}: span QA gold is {{answers, context}}; got {str(gold)[:60]}")
        context = gold["context"]
        words = words_of(context)
        c2w = char_to_word(context, words)
        out = np.zeros((units, 3), dtype=object)
        out[:, :2] = 0
        for a in gold["answers"]:
            s, e = a["answer_start"], a["answer_start"] + len(a["text"])
            ws, we = _word_at(c2w, s, +1), _word_at(c2w, e - 1, -1)
            if 0 <= ws < units:
                out[ws, 0] = 1
            if 0 <= we < units:
                out[we, 1] = 1
        ref = _Gold(context, words, [a["text"] for a in gold["answers"]])
        for u in range(units):
            out[u, 2] = ref
        return out

    def decide(self, out: np.ndarray) -> np.ndarray:
        """The fused word probabilities themselves: the span is decoded per example (:meth:`decide_examples`,
        :meth:`metric_inputs`), which needs the example boundaries this call does not have."""
        return np.asarray(out, dtype=np.float64).copy()

    def decide_examples(self, out: np.ndarray, example: np.ndarray) -> np.ndarray:
        """Each example's decoded span as 0/1 per word: column 0 its start word, column 1 its end word."""
        d = np.zeros_like(np.asarray(out, dtype=np.float64))
        for a, b in _groups(example):
            s, e, _ = best_span(out[a:b, 0], out[a:b, 1], *_DECODE)
            if s >= 0:
                d[a + s, 0], d[a + e, 1] = 1.0, 1.0
        return d

    def metric_inputs(
        self, decisions: np.ndarray, targets: np.ndarray, example: np.ndarray, labels: list[str] | None
    ) -> tuple[Any, Any]:
        """(answer texts, gold texts per question) of the examples with fused words."""
        preds, golds = [], []
        for a, b in _groups(example):
            ref: _Gold = targets[a, 2]
            s, e, _ = best_span(
                np.asarray(decisions[a:b, 0], float), np.asarray(decisions[a:b, 1], float), *_DECODE
            )
            preds.append(ref.context[ref.words[s, 0] : ref.words[e, 1]] if s >= 0 else "")
            golds.append(ref.answers)
        return preds, golds

    def fused_nll(self, out: np.ndarray, y: np.ndarray) -> float:
        flags = np.asarray(y[:, :2], dtype=np.float64)
        n = flags.sum()
        return float(-(flags * np.log(np.clip(out, _EPS, None))).sum() / n) if n else 0.0

    def fused_nll_grad(self, P: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
        flags = np.asarray(y[:, :2], dtype=np.float64)
        n = max(flags.sum(), 1.0)
        q = np.clip(np.tensordot(w, P, axes=1), _EPS, None)
        loss = float(-(flags * np.log(q)).sum() / n)
        return loss, -(P * (flags / q)[None]).sum(axis=(1, 2)) / n

    def votes(self, out: np.ndarray) -> np.ndarray:
        """A word holding more than half a member's start (end) probability: at most one per example, the
        member's most likely start (end) when it is that sure (a vote needs no example boundaries)."""
        return (np.asarray(out) > 0.5).astype(np.float64)

    def member_errors(self, decisions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Per word and column: 1 where the decoded start (end) word and the gold flags differ."""
        return (
            (np.round(np.asarray(decisions, dtype=np.float64)) != np.asarray(targets[:, :2], float))
            .astype(np.float64)
            .reshape(-1)
        )

    def example_record(
        self, decisions: np.ndarray, outputs: np.ndarray, labels: list[str] | None
    ) -> dict[str, Any]:
        """The span decoded from the fused word probabilities; :meth:`complete_record` cuts its text."""
        dist = np.round(np.asarray(outputs, dtype=np.float64), _DIGITS)
        s, e, p = best_span(dist[:, 0], dist[:, 1], *_DECODE)
        return {"words": [s, e], "score": round(p, _DIGITS), "probs": _probs_record(dist)}

    def complete_record(self, rec: dict[str, Any], member_rec: dict[str, Any]) -> dict[str, Any]:
        """The answer text and character span, cut from the context a member's record of the same example
        carries."""
        context = member_rec.get("context")
        if not isinstance(context, str):
            return rec
        s, e = rec["words"]
        words = words_of(context)
        if len(words) != len(rec["probs"]["start"]):  # the fused words are the context's words
            return rec
        return {**rec, **_span_fields(context, words, s, e), "context": context}

    # -- merging: what data-dependent methods need -------------------------------------------------------
    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """log p(start) + log p(end) of each window, over its positions (padding is masked by the head)."""
        logp = torch.log_softmax(logits.float(), dim=-2)  # [B, T, 2]
        flat = logp.transpose(-1, -2).reshape(-1, logp.shape[-2])  # [B * 2, T]
        return _categorical_ll(flat, labels.reshape(-1).to(flat.device), mode, gen)

    def prediction_entropy(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Mean entropy of the start and end distributions over each window's real positions."""
        mask = attention_mask.to(logits.device).bool().unsqueeze(-1)
        logp = torch.log_softmax(logits.float().masked_fill(~mask, -1e4), dim=-2)
        h = -(logp.exp() * logp).sum(dim=-2)  # [B, 2]
        return h.mean()


# ------------------------------------------------------------------------------------------------ helpers

#: fused decoding: the defaults of ``SpanQAConfig`` (fusion reads records, not the task config)
_DECODE = (20, 30)


class _Gold:
    """One example's context, words and gold answer texts (shared by the example's target rows)."""

    __slots__ = ("answers", "context", "words")

    def __init__(self, context: str, words: np.ndarray, answers: list[str]) -> None:
        self.context, self.words, self.answers = context, words, answers

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Gold) and (self.context, self.answers) == (other.context, other.answers)

    __hash__ = None  # type: ignore[assignment]


def _options(task: Any) -> Any:
    from mtfuse.config import SpanQAConfig

    return task.cfg.span_qa or SpanQAConfig()


def _groups(example: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) unit of each example present, in order."""
    example = np.asarray(example)
    if not len(example):
        return []
    cuts = [0, *(np.flatnonzero(np.diff(example)) + 1).tolist(), len(example)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _word_at(c2w: np.ndarray, pos: int, step: int) -> int:
    """The word at character ``pos``, or the nearest one in direction ``step`` (an answer edge on a space)."""
    while 0 <= pos < len(c2w) and c2w[pos] < 0:
        pos += step
    return int(c2w[pos]) if 0 <= pos < len(c2w) else -1


def answer_tokens(off: np.ndarray, ctx: np.ndarray, a: int, b: int) -> tuple[int, int]:
    """The (start, end) token of the character span ``[a, b)`` in one window, or (0, 0) (the [CLS] token)
    when the window's context does not hold all of it (run_qa's rule)."""
    pos = np.flatnonzero(ctx)
    if not len(pos) or off[pos[0], 0] > a or off[pos[-1], 1] < b:
        return 0, 0
    starts = pos[off[pos, 0] <= a]
    ends = pos[off[pos, 1] >= b]
    return int(starts[-1]), int(ends[0])


def word_distributions(
    probs: list[np.ndarray], offsets: list[np.ndarray], c2w: np.ndarray, n_words: int
) -> np.ndarray:
    """``[W, 2]`` start / end probabilities of the context's words from its windows' token softmaxes: per
    window a word's start (end) is the sum over the tokens that start (end) in it; across windows the
    highest; renormalised over the words."""
    out = np.zeros((n_words, 2), dtype=np.float64)
    for p, off in zip(probs, offsets, strict=True):
        here = np.zeros_like(out)
        for t in np.flatnonzero(off[:, 0] >= 0):
            a, b = int(off[t, 0]), int(off[t, 1])
            if b <= a:
                continue
            ws, we = c2w[a], c2w[b - 1]
            if ws >= 0:
                here[ws, 0] += p[t, 0]
            if we >= 0:
                here[we, 1] += p[t, 1]
        out = np.maximum(out, here)
    total = out.sum(axis=0, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def _span_fields(context: str, words: np.ndarray, s: int, e: int) -> dict[str, Any]:
    if s < 0:
        return {"answer": "", "start": 0, "end": 0}
    a, b = int(words[s, 0]), int(words[e, 1])
    return {"answer": context[a:b], "start": a, "end": b}


def _answer(dist: np.ndarray, context: str, words: np.ndarray, n_best: int, max_len: int) -> dict[str, Any]:
    s, e, p = best_span(dist[:, 0], dist[:, 1], n_best, max_len)
    return {
        **_span_fields(context, words, s, e),
        "score": round(p, _DIGITS),
        "words": [s, e],
        "context": context,
    }


def _probs_record(dist: np.ndarray) -> dict[str, list[float]]:
    dist = np.asarray(dist, dtype=np.float64).reshape(-1, 2)
    return {
        "start": [round(float(x), _DIGITS) for x in dist[:, 0]],
        "end": [round(float(x), _DIGITS) for x in dist[:, 1]],
    }


def first_sentence(context: str) -> str:
    """The context up to its first sentence end ('.', '!' or '?' before white space), the baseline answer."""
    m = re.search(r"[.!?](\s|$)", context)
    return context[: m.start() + 1] if m else context
