"""Evaluation metrics, on the 0-100 scale (GLUE convention: the usual score x 100), higher being better;
except the figures in ``LOWER_IS_BETTER`` (a masked-LM task's ``perplexity`` and ``mlm_loss``), which keep
their own scale and are turned into a 0-100, higher-is-better score wherever scores are compared
(:func:`task_score`: model selection, averages, compare's normalisation, merge searches and soups).

Every entry of ``METRICS`` is a pure function ``fn(preds, golds) -> float``. The maths is delegated to
scikit-learn, SciPy and seqeval so that scores match the published GLUE / CoNLL numbers; this module only
picks the right call, guards the degenerate cases and rescales.

Degenerate cases return 0.0 instead of NaN (a NaN would silently poison the task average and model selection):

* ``pearson`` / ``spearman``: the correlation is undefined when predictions or gold scores are constant (or
  there are fewer than two pairs); we report 0.0, i.e. "no linear / rank relation", as the GLUE scorer's
  ``scipy`` call would otherwise give NaN.
* ``matthews``: constant predictions give 0.0 (scikit-learn's own convention).
* ``f1``, ``micro_f1``, ``macro_f1``, ``seqeval_f1``: a precision or recall with an empty denominator counts
  as 0 (``zero_division=0``).
* ``srl_precision``, ``srl_recall``, ``srl_f1``: the same, with no predicted or no gold argument.
* ``perplexity``, ``mlm_loss``: no masked token in the split (nothing was scored): 0.0, and a task score of 0.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from seqeval.metrics import f1_score as seqeval_f1_score
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from mtfuse.registry import Registry

MetricFn = Callable[[Any, Any], float]

METRICS: Registry[MetricFn] = Registry("metric")


def _pair(preds: Any, golds: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(preds), np.asarray(golds)
    if p.shape != g.shape:
        raise ValueError(f"predictions have shape {p.shape} but gold labels have shape {g.shape}")
    return p, g


@METRICS.register("accuracy")
def accuracy(preds: Any, golds: Any) -> float:
    """Fraction of exact matches (class indices), x100."""
    p, g = _pair(preds, golds)
    return 100.0 * float(accuracy_score(g, p))


@METRICS.register("f1")
def f1(preds: Any, golds: Any) -> float:
    """Binary F1 of the positive class (index 1), x100, as GLUE scores MRPC and QQP."""
    p, g = _pair(preds, golds)
    # labels=[0, 1] keeps "binary" valid even when a tiny eval set holds a single class.
    return 100.0 * float(f1_score(g, p, labels=[0, 1], pos_label=1, average="binary", zero_division=0))


@METRICS.register("matthews")
def matthews(preds: Any, golds: Any) -> float:
    """Matthews correlation coefficient, x100 (GLUE CoLA). Constant predictions give 0.0."""
    p, g = _pair(preds, golds)
    return 100.0 * float(matthews_corrcoef(g, p))


def _correlation(fn: Callable[[np.ndarray, np.ndarray], Any], preds: Any, golds: Any) -> float:
    p, g = _pair(preds, golds)
    p, g = p.astype(np.float64).ravel(), g.astype(np.float64).ravel()
    # Undefined correlation (constant input or < 2 pairs): report 0.0 rather than NaN, see module docstring.
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(g) == 0:
        return 0.0
    r = float(fn(p, g)[0])
    return 0.0 if math.isnan(r) else 100.0 * r


@METRICS.register("pearson")
def pearson(preds: Any, golds: Any) -> float:
    """Pearson correlation, x100 (GLUE STS-B). A constant prediction (or gold) gives 0.0."""
    return _correlation(stats.pearsonr, preds, golds)


@METRICS.register("spearman")
def spearman(preds: Any, golds: Any) -> float:
    """Spearman rank correlation, x100 (GLUE STS-B). A constant prediction (or gold) gives 0.0."""
    return _correlation(stats.spearmanr, preds, golds)


@METRICS.register("seqeval_f1")
def seqeval_f1(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> float:
    """Entity-level micro F1 over IOB2 tag sequences, x100.

    seqeval's default (conlleval-compatible) mode, as in the Hugging Face ``run_ner`` example: an entity
    counts only when its type and both boundaries match exactly.
    """
    p = [list(s) for s in preds]
    g = [list(s) for s in golds]
    if len(p) != len(g) or any(len(a) != len(b) for a, b in zip(p, g, strict=True)):
        raise ValueError("predicted and gold tag sequences differ in number or length")
    return 100.0 * float(seqeval_f1_score(g, p, zero_division=0))


def _label_counts(preds: Any, golds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label true positives, false positives and false negatives of a 0/1 matrix ``[n, num_labels]``.

    Counted here rather than by scikit-learn, which reads an ``[n, 1]`` indicator matrix (a multi-label task
    with one label) as a binary target and scores both of its classes.
    """
    p, g = _pair(preds, golds)
    if p.ndim != 2:
        raise ValueError(f"multi-label predictions must be a [n, num_labels] matrix, got shape {p.shape}")
    p, g = p.astype(bool), g.astype(bool)
    return (p & g).sum(axis=0), (p & ~g).sum(axis=0), (~p & g).sum(axis=0)


def _f1(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """``2tp / (2tp + fp + fn)``, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    tp, den = np.asarray(tp, dtype=np.float64), np.asarray(2 * tp + fp + fn, dtype=np.float64)
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


@METRICS.register("micro_f1")
def micro_f1(preds: Any, golds: Any) -> float:
    """Micro-averaged F1 over a multi-label 0/1 matrix ``[n, num_labels]``, x100 (counts pooled over labels)."""
    tp, fp, fn = _label_counts(preds, golds)
    return 100.0 * float(_f1(tp.sum(), fp.sum(), fn.sum()))


@METRICS.register("macro_f1")
def macro_f1(preds: Any, golds: Any) -> float:
    """Macro-averaged F1 (unweighted mean over labels) of a multi-label 0/1 matrix, x100.

    A label with no gold and no predicted positive scores 0 (``zero_division=0``).
    """
    tp, fp, fn = _label_counts(preds, golds)
    return 100.0 * float(_f1(tp, fp, fn).mean()) if tp.size else 0.0


# -- joint intent detection + slot filling: one frame [intent, tag, tag, ...] per utterance -----------------


def _frames(
    preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]
) -> list[tuple[list[str], list[str]]]:
    p, g = [list(x) for x in preds], [list(x) for x in golds]
    if len(p) != len(g) or any(len(a) != len(b) or not a for a, b in zip(p, g, strict=True)):
        raise ValueError("predicted and gold frames ([intent, tag, ...]) differ in number or length")
    return list(zip(p, g, strict=True))


@METRICS.register("intent_accuracy")
def intent_accuracy(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> float:
    """Fraction of utterances whose intent (frame item 0) is right, x100."""
    pairs = _frames(preds, golds)
    return 100.0 * float(np.mean([a[0] == b[0] for a, b in pairs])) if pairs else 0.0


@METRICS.register("slot_f1")
def slot_f1(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> float:
    """Entity-level micro F1 of the slot tags (frame items 1...), x100: seqeval's conlleval-compatible mode, the
    slot F1 of the ATIS / SNIPS literature (Goo et al. 2018)."""
    pairs = _frames(preds, golds)
    return seqeval_f1([a[1:] for a, _ in pairs], [b[1:] for _, b in pairs])


@METRICS.register("frame_accuracy")
def frame_accuracy(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> float:
    """Sentence-level semantic frame accuracy, x100: the intent and every slot tag right (Goo et al. 2018's
    "sentence accuracy")."""
    pairs = _frames(preds, golds)
    return 100.0 * float(np.mean([a == b for a, b in pairs])) if pairs else 0.0


def _srl_counts(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> tuple[int, int, int]:
    """(correct, predicted, gold) labelled arguments: (example, word, role) triples, one example being one
    predicate (so the triple is CoNLL-2009's (predicate, argument head, role)); 'O' and the predicate's own
    'V' are no arguments."""
    if len(preds) != len(golds) or any(len(a) != len(b) for a, b in zip(preds, golds, strict=True)):
        raise ValueError("predicted and gold role sequences differ in number or length")

    def triples(seqs: Sequence[Sequence[str]]) -> set[tuple[int, int, str]]:
        return {(i, j, r) for i, s in enumerate(seqs) for j, r in enumerate(s) if r not in ("O", "V")}

    p, g = triples(preds), triples(golds)
    return len(p & g), len(p), len(g)


@METRICS.register("srl_precision")
def srl_precision(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> float:
    """Labelled argument precision over the corpus (CoNLL-2009 style, senses not scored), x100."""
    tp, n_pred, _ = _srl_counts(preds, golds)
    return 100.0 * tp / n_pred if n_pred else 0.0


@METRICS.register("srl_recall")
def srl_recall(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> float:
    """Labelled argument recall over the corpus, x100."""
    tp, _, n_gold = _srl_counts(preds, golds)
    return 100.0 * tp / n_gold if n_gold else 0.0


@METRICS.register("srl_f1")
def srl_f1(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> float:
    """Labelled argument F1, micro-averaged over (predicate, head word, role) triples, x100: as CoNLL-2009
    scores semantic dependencies (Hajic et al. 2009), but arguments only (the predicate's 'V' and its sense
    are not counted)."""
    tp, n_pred, n_gold = _srl_counts(preds, golds)
    return 100.0 * float(_f1(tp, n_pred - tp, n_gold - tp))


def score_of(metric: str, value: float) -> float:
    """A metric's value as a 0-100 score, higher being better: the value itself, or for a lower-is-better
    figure (``LOWER_IS_BETTER``) its score."""
    to_score = LOWER_IS_BETTER.get(metric)
    return float(value) if to_score is None else to_score(float(value))


def task_score(metrics: Mapping[str, float]) -> float:
    """One number per task: the mean of its metrics (e.g. MRPC = mean(F1, accuracy), as on the GLUE board),
    lower-is-better figures as their scores (:func:`score_of`). Descriptive figures that are not scores
    (``DESCRIPTIVE``: a generation task's ``gen_len``) are left out."""
    scores = [score_of(k, v) for k, v in metrics.items() if k not in DESCRIPTIVE] or [
        score_of(k, v) for k, v in metrics.items()
    ]
    if not scores:
        raise ValueError("task_score needs at least one metric")
    return float(np.mean(scores))


def aggregate(per_task: Mapping[str, Mapping[str, float]]) -> float:
    """GLUE-style average: the mean over tasks of each task's ``task_score`` (every task weighs the same)."""
    if not per_task:
        raise ValueError("aggregate needs at least one task")
    return float(np.mean([task_score(m) for m in per_task.values()]))


# ------------------------------------------------------------------------------- generated text (0-100)
# ``preds``: one generated string per example; ``golds``: one reference string, or a list of references, per
# example. Scores come from sacreBLEU (Post 2018, "A Call for Clarity in Reporting BLEU Scores") and Google's
# rouge-score, so that they match published numbers.

#: figures reported beside a task's metrics that are not quality scores (left out of ``task_score``)
DESCRIPTIVE = frozenset({"gen_len"})


def _references(preds: Sequence[str], golds: Sequence[Any]) -> list[list[str]]:
    refs = [[str(g)] if isinstance(g, str) else [str(x) for x in g] for g in golds]
    if len(refs) != len(preds):
        raise ValueError(f"{len(preds)} generated texts but {len(refs)} references")
    if any(not r for r in refs):
        raise ValueError("an example has no reference text")
    return refs


def _ref_streams(refs: list[list[str]]) -> list[list[str | None]]:
    """sacreBLEU's layout: one stream per reference position; a missing reference is None."""
    k = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(k)]


@METRICS.register("bleu")
def bleu(preds: Sequence[str], golds: Sequence[Any]) -> float:
    """Corpus BLEU (Papineni et al. 2002) by sacreBLEU with its default 13a tokenisation, every reference
    of an example counted (multi-reference BLEU)."""
    import sacrebleu

    refs = _references(preds, golds)
    if not preds:
        return 0.0
    return float(sacrebleu.corpus_bleu([str(p) for p in preds], _ref_streams(refs)).score)


@METRICS.register("chrf")
def chrf(preds: Sequence[str], golds: Sequence[Any]) -> float:
    """Corpus chrF (Popovic 2015; character 6-grams, beta 2) by sacreBLEU, every reference counted."""
    import sacrebleu

    refs = _references(preds, golds)
    if not preds:
        return 0.0
    return float(sacrebleu.corpus_chrf([str(p) for p in preds], _ref_streams(refs)).score)


def _rouge(kind: str, preds: Sequence[str], golds: Sequence[Any]) -> float:
    """Mean over examples of the ROUGE F-measure (Lin 2004) by rouge-score with Porter stemming, taking
    for each example the best score over its references (the max, as SciTLDR reports)."""
    from rouge_score import rouge_scorer

    refs = _references(preds, golds)
    if not preds:
        return 0.0
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
    best = [
        max(scorer.score(r, str(p))[kind].fmeasure for r in rs) for p, rs in zip(preds, refs, strict=True)
    ]
    return 100.0 * float(np.mean(best))


@METRICS.register("rouge1")
def rouge1(preds: Sequence[str], golds: Sequence[Any]) -> float:
    """ROUGE-1 F (unigrams), stemmed, max over references, mean over examples, x100."""
    return _rouge("rouge1", preds, golds)


@METRICS.register("rouge2")
def rouge2(preds: Sequence[str], golds: Sequence[Any]) -> float:
    """ROUGE-2 F (bigrams), stemmed, max over references, mean over examples, x100."""
    return _rouge("rouge2", preds, golds)


@METRICS.register("rougeL")
def rouge_l(preds: Sequence[str], golds: Sequence[Any]) -> float:
    """ROUGE-L F (longest common subsequence, per text), stemmed, max over references, x100."""
    return _rouge("rougeL", preds, golds)


def _distinct(n: int, preds: Sequence[str]) -> float:
    """Distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
    Models"): distinct n-grams / all n-grams over every generated text (white-space words, lowercased), x100."""
    grams = [
        tuple(words[i : i + n])
        for p in preds
        for words in [str(p).lower().split()]
        for i in range(len(words) - n + 1)
    ]
    return 100.0 * len(set(grams)) / len(grams) if grams else 0.0


@METRICS.register("distinct1")
def distinct1(preds: Sequence[str], golds: Sequence[Any]) -> float:
    """Distinct-1 of the generated texts (the references are not used), x100."""
    return _distinct(1, preds)


@METRICS.register("distinct2")
def distinct2(preds: Sequence[str], golds: Sequence[Any]) -> float:
    """Distinct-2 of the generated texts (the references are not used), x100."""
    return _distinct(2, preds)


@METRICS.register("gen_len")
def gen_len(preds: Sequence[str], golds: Sequence[Any]) -> float:
    """The mean length of the generated texts in white-space words (descriptive, not a score: DESCRIPTIVE)."""
    return float(np.mean([len(str(p).split()) for p in preds])) if len(preds) else 0.0


# -- extractive QA: the official SQuAD v1.1 evaluation (evaluate-v1.1.py, Rajpurkar et al. 2016) -------------
def squad_normalize(s: str) -> str:
    """``normalize_answer`` of the official script: lower case, drop punctuation, drop the articles a / an /
    the, collapse white space (in that order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


_PUNCT = set(string.punctuation)


def _squad_f1_one(pred: str, gold: str) -> float:
    p, g = squad_normalize(pred).split(), squad_normalize(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _squad_mean(
    fn: Callable[[str, str], float], preds: Sequence[str], golds: Sequence[Sequence[str]]
) -> float:
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predicted answers but {len(golds)} gold answer lists")
    if not preds:
        return 0.0
    # the maximum over the gold answers of each question, as metric_max_over_ground_truths
    return 100.0 * float(np.mean([max(fn(p, g) for g in gs) for p, gs in zip(preds, golds, strict=True)]))


@METRICS.register("exact_match")
def exact_match(preds: Sequence[str], golds: Sequence[Sequence[str]]) -> float:
    """SQuAD v1.1 exact match, x100: a predicted answer text against each question's gold answer texts."""
    return _squad_mean(lambda p, g: float(squad_normalize(p) == squad_normalize(g)), preds, golds)


@METRICS.register("squad_f1")
def squad_f1(preds: Sequence[str], golds: Sequence[Sequence[str]]) -> float:
    """SQuAD v1.1 token F1, x100 (bag-of-tokens overlap after normalisation, the best gold answer)."""
    return _squad_mean(_squad_f1_one, preds, golds)


# -- masked language modelling: the NLL of each masked token's original id (Devlin et al. 2019) -------------
# ``preds``: per example, the negative log-likelihood (nats) the model gives each of its masked tokens' gold ids
# (mtfuse.tasks.types.masked_lm); ``golds``: per example, those gold tokens (only their number is checked).


def _masked_nlls(preds: Sequence[Sequence[float]], golds: Sequence[Sequence[Any]] | None) -> np.ndarray:
    if golds is not None:
        if len(preds) != len(golds) or any(len(p) != len(g) for p, g in zip(preds, golds, strict=True)):
            raise ValueError("per-token NLLs and gold masked tokens differ in number")
    flat = [float(x) for p in preds for x in p]
    return np.asarray(flat, dtype=np.float64)


@METRICS.register("mlm_loss")
def mlm_loss(preds: Sequence[Sequence[float]], golds: Sequence[Sequence[Any]] | None) -> float:
    """The mean token cross-entropy (nats) over every masked token of the split: the masked-LM loss of
    Devlin et al. 2019 ("BERT", NAACL), on the split. Lower is better (``LOWER_IS_BETTER``)."""
    nll = _masked_nlls(preds, golds)
    return float(nll.mean()) if nll.size else 0.0


@METRICS.register("perplexity")
def perplexity(preds: Sequence[Sequence[float]], golds: Sequence[Sequence[Any]] | None) -> float:
    """exp(:func:`mlm_loss`): the perplexity of the masked tokens, pooled over the split (the exponent of the
    mean, not the mean of per-example perplexities). Lower is better (``LOWER_IS_BETTER``); a model that
    spreads its probability evenly over a vocabulary of V tokens has perplexity V."""
    nll = _masked_nlls(preds, golds)
    return float(math.exp(min(float(nll.mean()), 700.0))) if nll.size else 0.0  # 700: exp's float range


def _inverse_perplexity(ppl: float) -> float:
    return 100.0 / ppl if math.isfinite(ppl) and ppl > 0 else 0.0


def _probability_of_loss(loss: float) -> float:
    # 0.0 is what mlm_loss reports for a split without masked tokens (a real loss over a split is > 0)
    return 100.0 * math.exp(-loss) if math.isfinite(loss) and loss > 0 else 0.0


#: lower-is-better figures -> their 0-100 higher-is-better score: for perplexity and the masked-LM loss alike,
#: 100 / perplexity = 100 * exp(-mean NLL), the geometric mean of the probability the model gives the masked
#: tokens' gold ids (x100), so that the two agree and a task's score falls as its perplexity rises
LOWER_IS_BETTER: dict[str, Callable[[float], float]] = {
    "perplexity": _inverse_perplexity,
    "mlm_loss": _probability_of_loss,
}
