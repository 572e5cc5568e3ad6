"""Every registered task type implements what fusion asks of it (``TaskType``'s fusion methods), consistently:
a prediction record read back (``outputs``) and written again (``example_record``) is the same record; its
gold becomes targets the metrics take; the NLL's gradient is right; votes, errors, the Fisher log-likelihood
and the prediction entropy have the shapes and signs fusion relies on.

A new task type needs one example label here (``RAW``); the test says so when it is missing. A type that is
not fused (``TaskType.fusable``) is checked for a clear refusal and for what merging needs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.optimize import approx_fprime

from mtfuse.errors import MtfuseError
from mtfuse.fusion.ensemble.members import make_records, stack_outputs
from mtfuse.fusion.ensemble.stack import LEARNERS
from mtfuse.metrics import METRICS
from mtfuse.tasks.types import TASK_TYPES, TaskType

LABELS = ["B-X", "I-X", "O"]  # IOB tags, so that token metrics read them as entities
#: three raw gold labels per type, as a data file holds them
RAW = {
    "classification": ["B-X", "O", "I-X"],
    "pair_classification": ["I-X", "B-X", "O"],
    "regression": [0.5, 2.0, -1.25],
    "multilabel": ["B-X|O", "I-X", "B-X,I-X,O"],
    "token_classification": [["B-X", "I-X"], ["O"], ["B-X", "I-X", "O"]],
    "multiple_choice": [2, 0, "1"],
    "generation": ["ein Hund", ["zwei Katzen", "2 Katzen"], "ein Haus"],
    "intent_slots": [
        {"intent": "a", "slots": ["B-X", "I-X"]},
        {"intent": "b", "slots": "O"},
        {"intent": "a#b", "slots": ["O", "B-X", "I-X"]},
    ],
    "srl": [["B-X", "I-X"], ["O"], ["B-X", "I-X", "O"]],  # roles per word, as token classification
    "span_qa": [  # (question, context, answers): records come from the type's own decoding
        ("who?", "Ann met Bob in Paris.", [{"text": "Bob", "answer_start": 8}]),
        ("where?", "It is in London, not Rome.", [{"text": "London", "answer_start": 9}]),
        ("what?", "A red car.", [{"text": "red car", "answer_start": 2}, {"text": "car", "answer_start": 6}]),
    ],
}
#: the label vocabulary of a type whose labels are not names (default: LABELS)
VOCAB = {
    "multiple_choice": ["0", "1", "2"],
    "intent_slots": ["intent:<unseen>", "intent:a", "intent:a#b", "intent:b"]
    + ["slot:B-<unseen>", "slot:B-X", "slot:I-<unseen>", "slot:I-X", "slot:O"],
}


def _examples(tt: TaskType) -> tuple[list[str] | None, list[dict], torch.Tensor, torch.Tensor]:
    """(labels, prediction records with gold, logits, collated labels) of three examples."""
    assert tt.name in RAW, f"task type '{tt.name}': add three example labels to RAW in {__file__}"
    if tt.name == "span_qa":
        return _span_examples(tt)
    labels = VOCAB.get(tt.name, LABELS) if tt.has_vocab else None
    encoded = [tt.encode_label(v, labels, "row", "label", "train") for v in RAW[tt.name]]
    seq = 4
    c = tt.num_outputs(labels)
    g = torch.Generator().manual_seed(0)
    shape = (3, seq, c) if tt.token_level else (3, c)
    logits = torch.randn(shape, generator=g)
    batch_labels = tt.collate_labels(encoded, seq)
    preds, probs = tt.predict(logits)
    recs = []
    for i, enc in enumerate(encoded):
        p, pr, gold = preds[i], probs[i], enc
        if tt.token_level:  # one prediction per word the model saw; the gold as tags (TaskData.gold)
            p, pr, gold = p[: len(enc)], pr[: len(enc)], [(labels or LABELS)[j] for j in enc]
        rec = {"index": i, **tt.record(p, pr, labels), "gold": tt.gold_record(gold, labels)}
        recs.append(json.loads(json.dumps(rec)))  # as written to predictions/<task>.jsonl
    return labels, recs, logits, batch_labels


def _text_type_fuses(tt: TaskType) -> None:
    """A type whose outputs are texts (generation): records carry the text, members' texts are selected
    among by MBR, and the token-level Fisher log-likelihood ignores padding."""
    from mtfuse.fusion.ensemble.texts import select

    golds = [tt.gold_record(tt.encode_label(v, None, "row", "label", "train"), None) for v in RAW[tt.name]]
    recs = [{"index": i, **tt.record(f"text {i}", -0.5, None), "gold": g} for i, g in enumerate(golds)]
    recs = [json.loads(json.dumps(r)) for r in recs]
    assert [tt.text_of(r, "rec") for r in recs] == ["text 0", "text 1", "text 2"]
    assert all(tt.same_gold(r["gold"], g) for r, g in zip(recs, golds, strict=True))
    out = select([["a b c", "x"], ["a b d", "y"], ["a b c", "y"]])
    assert out == {"texts": ["a b c", "y"], "members": [0, 1]}
    logits = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1, 2, -100, -100], [3, 4, 5, -100]])
    for mode in ("sampled", "predicted", "gold"):
        x = logits.clone().requires_grad_(True)
        ll = tt.fisher_log_likelihood(x, labels, mode, torch.Generator().manual_seed(1))
        assert ll.dim() == 0 and torch.isfinite(ll)
        ll.backward()
        assert x.grad is not None and float(x.grad[0, 2].abs().sum()) == 0.0  # padding has no say


def _span_examples(tt: TaskType) -> tuple[None, list[dict], torch.Tensor, torch.Tensor]:
    """Span QA: random word distributions decoded into records; logits are start / end per position
    ``[3, 4, 2]`` (one window each), labels a (start, end) position per window."""
    from mtfuse.tasks.types.span_qa import _answer, words_of

    rng = np.random.default_rng(0)
    recs = []
    for i, (_, context, answers) in enumerate(RAW["span_qa"]):
        words = words_of(context)
        dist = np.round(rng.dirichlet(np.ones(len(words)), size=2).T, 6)
        pred = _answer(dist, context, words, 20, 30)
        rec = {
            "index": i,
            **tt.record(pred, dist, None),
            "gold": tt.gold_record({"answers": answers, "context": context}, None),
        }
        recs.append(json.loads(json.dumps(rec)))
    logits = torch.randn((3, 4, 2), generator=torch.Generator().manual_seed(0))
    return None, recs, logits, tt.collate_labels([[1, 2], [0, 0], [3, 3]], 4)


def _unfused_type(tt: TaskType) -> None:
    """A type whose outputs are not fused (masked_lm): reading a record for fusion is refused, naming the
    type; what merging needs works on its logits ``[N, V]`` (one row per masked token), none included."""
    rec = {"index": 0, **tt.record({"positions": [2], "tokens": ["a"], "nll": [0.5]}, [[("a", 0.6)]], None)}
    with pytest.raises(MtfuseError, match=tt.name):
        tt.outputs(json.loads(json.dumps(rec)), None, "rec 0")
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 4, 4, 0, 10])
    for rows in (5, 0):  # a batch where no token was chosen contributes nothing
        for mode in ("sampled", "predicted", "gold"):
            x = logits[:rows].clone().requires_grad_(True)
            ll = tt.fisher_log_likelihood(x, labels[:rows], mode, torch.Generator().manual_seed(1))
            assert ll.dim() == 0 and torch.isfinite(ll) and (rows > 0 or float(ll.detach()) == 0.0)
            ll.backward()
            assert x.grad is not None and torch.isfinite(x.grad).all()
    h = tt.prediction_entropy(logits, torch.ones(1, 5))
    assert h is not None and 0 <= float(h) <= np.log(11)
    assert tt.prediction_entropy(logits[:0], torch.ones(1, 5)) is None


@pytest.mark.parametrize("name", TASK_TYPES.names())
def test_every_task_type_implements_fusion(name: str) -> None:
    tt = TASK_TYPES.get(name)
    if not tt.fusable:
        _unfused_type(tt)
        return
    if tt.fused_as_text:
        assert name in RAW, f"task type '{tt.name}': add three example labels to RAW in {__file__}"
        _text_type_fuses(tt)
        return
    labels, recs, logits, batch_labels = _examples(tt)
    assert tt.fuses_with(tt) and tt.unit in ("example", "word")
    assert tt.stack_learner in LEARNERS

    # records -> outputs -> records: one record format for evaluate, predict and fusion
    outputs = [tt.outputs(r, labels, f"rec {i}") for i, r in enumerate(recs)]
    assert all(o.ndim == 2 and o.shape[1] == tt.num_outputs(labels) for o in outputs)
    P, example = stack_outputs(tt, [outputs, outputs])
    assert P.shape[0] == 2 and len(example) == P.shape[1] and np.all(np.diff(example) >= 0)
    again = make_records(tt, labels, P[0], example, len(recs), [r["gold"] for r in recs], recs)
    assert again == recs
    assert tt.aligned_units(np.array([[len(o) for o in outputs], [len(o) for o in outputs]])).tolist() == [
        len(o) for o in outputs
    ]

    # gold -> targets -> metrics
    units = np.bincount(example, minlength=len(recs))
    y = np.concatenate([tt.targets(r["gold"], labels, int(units[i]), "here") for i, r in enumerate(recs)])
    assert len(y) == P.shape[1]
    assert all(tt.same_gold(r["gold"], json.loads(json.dumps(r["gold"]))) for r in recs)
    d = tt.decide(P[0])
    preds, gold = tt.metric_inputs(d, y, example, labels)
    for m in tt.default_metrics:
        assert np.isfinite(METRICS.get(m)(preds, gold))
    assert tt.member_errors(d, y).shape[0] >= len(y)

    # NLL of the weighted mean and its gradient
    w = np.array([0.3, 0.7])
    P2 = np.stack([P[0], P[0] + 0.5 if tt.continuous else P[0][::-1]])  # a second, different member
    loss, grad = tt.fused_nll_grad(P2, y, w)
    assert loss == pytest.approx(tt.fused_nll(np.tensordot(w, P2, axes=1), y))
    num = approx_fprime(w, lambda v: tt.fused_nll_grad(P2, y, v)[0], 1e-7)
    assert grad == pytest.approx(num, rel=1e-3, abs=1e-4)

    # votes: a decision per unit, or none for continuous outputs (the mean is used)
    if tt.continuous:
        with pytest.raises(MtfuseError):
            tt.votes(P[0])
    else:
        v = tt.votes(P[0])
        assert v.shape == P[0].shape and set(np.unique(v)) <= {0.0, 1.0}

    # what merging needs: the Fisher log-likelihood (differentiable) and the prediction entropy
    for mode in ("sampled", "predicted", "gold"):
        x = logits.clone().requires_grad_(True)
        ll = tt.fisher_log_likelihood(x, batch_labels, mode, torch.Generator().manual_seed(1))
        assert ll.dim() == 0 and torch.isfinite(ll)
        ll.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    h = tt.prediction_entropy(logits, torch.ones(logits.shape[:2] if tt.token_level else (3, 4)))
    if tt.continuous:
        assert h is None
    else:
        assert h is not None and h.dim() == 0 and float(h) >= 0
