"""Extractive span QA: windows with a document stride, answer <-> character offsets, n-best decoding, the SQuAD
v1.1 metrics (hand-worked values), the squad reader and its errors, the head and loss, and (slow) the real
MiniLM on an XQuAD slice beside SST-2."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from mtfuse.config import DataConfig, SpanQAConfig, TaskConfig
from mtfuse.errors import DataError
from mtfuse.metrics import exact_match, squad_f1, squad_normalize
from mtfuse.model.heads import build_head
from mtfuse.tasks.features import TaskData, Tokenizing, encode_rows
from mtfuse.tasks.readers import READERS
from mtfuse.tasks.readers.squad import split_articles
from mtfuse.tasks.types import TASK_TYPES
from mtfuse.tasks.types.span_qa import best_span, char_to_word, word_distributions, words_of
from tests.helpers.cli import run_cli

QA = TASK_TYPES.get("span_qa")
XQUAD = Path(__file__).parents[2].parent / "shared" / "data" / "xquad" / "xquad.en.json"
needs_xquad = pytest.mark.skipif(not XQUAD.is_file(), reason="no ../shared/data/xquad")

# a long context: 40 numbered sentences, the answer near the end
CONTEXT = (
    " ".join(f"Sentence {i} tells of the river number {i}." for i in range(40)) + " The capital is Lyon."
)
ANSWER = "Lyon"


def _task(max_length: int = 48, stride: int = 16) -> TaskData:
    cfg = TaskConfig(
        name="qa",
        type="span_qa",
        data=DataConfig(format="jsonl", files={"train": "x"}),
        max_length=max_length,
        span_qa=SpanQAConfig(doc_stride=stride),
    )
    return TaskData(cfg, QA, ["question", "context"], "answers", None)


def _rows(text: str = ANSWER) -> list[dict]:
    at = CONTEXT.index(text)
    return [
        {
            "question": "What is the capital?",
            "context": CONTEXT,
            "answers": [{"text": text, "answer_start": at}],
            "_where": "in.jsonl:1",
        }
    ]


@pytest.fixture(scope="module")
def tokenizing(tiny_model_dir: Path) -> Tokenizing:
    return Tokenizing(AutoTokenizer.from_pretrained(str(tiny_model_dir)), None)


def test_windows_with_stride_cover_the_context(tokenizing: Tokenizing) -> None:
    enc, gold = encode_rows(_rows(), _task(), "train", tokenizing)
    n = len(enc)
    assert n > 3 and enc.extra["example"].tolist() == [0] * n  # one example, many windows
    assert gold == [{"answers": _rows()[0]["answers"], "context": CONTEXT}]
    covered = np.zeros(len(CONTEXT), dtype=bool)
    spans = []
    for w in range(n):
        off, ctx = enc.extra["offsets"][w], enc.extra["context_mask"][w]
        assert len(enc.input_ids[w]) <= 48 and (off[~ctx] == -1).all()
        for a, b in off[ctx]:
            covered[a:b] = True
        spans.append(off[ctx])
        if w:  # consecutive windows share doc_stride context tokens
            shared = {tuple(x) for x in spans[w - 1]} & {tuple(x) for x in spans[w]}
            assert len(shared) == 16
    words = words_of(CONTEXT)
    assert all(covered[a:b].all() for a, b in words)  # every word is in some window


@pytest.mark.parametrize("which", ["last", "first"])
def test_answer_tokens_round_trip_to_char_offsets(tokenizing: Tokenizing, which: str) -> None:
    """The label of every window holding the answer maps back to exactly the answer's characters; a window
    without it is labelled (0, 0), the [CLS] token. The answer near the end (last window) and at the start."""
    text = ANSWER if which == "last" else "tells of the river"
    at = CONTEXT.index(text)
    rows = _rows(text)
    enc, _ = encode_rows(rows, _task(), "train", tokenizing)
    holding = 0
    for w in range(len(enc)):
        s, e = enc.labels[w].tolist()
        off = enc.extra["offsets"][w]
        if (s, e) == (0, 0):
            ctx = off[enc.extra["context_mask"][w]]
            assert not (ctx[0, 0] <= at and ctx[-1, 1] >= at + len(text))
            continue
        holding += 1
        assert CONTEXT[off[s, 0] : off[e, 1]] == text
    assert holding >= 1


def test_best_span_respects_order_and_length() -> None:
    ps = np.array([0.1, 0.1, 0.7, 0.1])
    pe = np.array([0.6, 0.1, 0.1, 0.2])  # the likeliest end is before the likeliest start
    assert best_span(ps, pe, 20, 30)[:2] == (2, 3)  # 0.7 * 0.2 = 0.14 beats (0, 0) 0.1 * 0.6 = 0.06
    assert best_span(ps, pe, 20, 30)[2] == pytest.approx(0.14)
    ps, pe = np.array([0.9, 0.05, 0.05]), np.array([0.05, 0.1, 0.85])
    assert best_span(ps, pe, 20, 30)[:2] == (0, 2)
    assert best_span(ps, pe, 20, 2)[:2] == (0, 1)  # (0, 2) spans 3 words > max_answer_length 2
    assert best_span(ps, pe, 1, 30)[:2] == (0, 2)  # top-1 start x top-1 end
    assert best_span(np.zeros(0), np.zeros(0), 20, 30) == (-1, -1, 0.0)


def test_word_distributions_take_the_best_window_and_normalise() -> None:
    context = "Ann met Bob."
    words = words_of(context)
    assert [context[a:b] for a, b in words] == ["Ann", "met", "Bob", "."]
    c2w = char_to_word(context, words)
    # window 1: [CLS] Ann met; window 2: [CLS] met Bob . (sub-tokens "B" "##ob" share the word Bob)
    off1 = np.array([[-1, -1], [0, 3], [4, 7]])
    p1 = np.array([[0.5, 0.5], [0.3, 0.1], [0.2, 0.4]])
    off2 = np.array([[-1, -1], [4, 7], [8, 9], [9, 11], [11, 12]])
    p2 = np.array([[0.2, 0.2], [0.1, 0.1], [0.3, 0.1], [0.3, 0.5], [0.1, 0.1]])
    d = word_distributions([p1, p2], [off1, off2], c2w, len(words))
    start = np.array([0.3, 0.2, 0.6, 0.1])  # Bob's start: "B" 0.3 + "##ob" 0.3; met: max(0.2, 0.1)
    end = np.array([0.1, 0.4, 0.6, 0.1])
    np.testing.assert_allclose(d[:, 0], start / start.sum())
    np.testing.assert_allclose(d[:, 1], end / end.sum())


def test_squad_metrics_by_hand() -> None:
    """Values worked by hand from the official evaluate-v1.1.py definitions."""
    assert squad_normalize("The  Denver Broncos!") == "denver broncos"
    assert squad_normalize("an apple, a pear") == "apple pear"
    assert squad_normalize("Theatre") == "theatre"  # 'the' only as a whole word
    # EM: normalised equality, the best gold answer
    assert exact_match(["the Broncos"], [["Broncos", "Denver Broncos"]]) == 100.0
    assert exact_match(["Denver"], [["Denver Broncos"]]) == 0.0
    # F1 'Denver Broncos' vs 'Broncos': overlap 1, precision 1/2, recall 1 -> 2/3
    assert squad_f1(["Denver Broncos"], [["Broncos"]]) == pytest.approx(100 * 2 / 3)
    # 'a b a' vs 'a a c' -> tokens [b] vs [c] after dropping the article 'a'... the articles go: 0 overlap
    assert squad_f1(["a b a"], [["a a c"]]) == 0.0
    # repeated tokens count by multiplicity: 'x x y' vs 'x y y': overlap x1 + y1 = 2, P = R = 2/3 -> 2/3
    assert squad_f1(["x x y"], [["x y y"]]) == pytest.approx(100 * 2 / 3)
    # max over golds, then the mean over questions: (1 + 0.5 * 2 / 1.5 ... ) worked out: q1 = 1, q2 = 0 -> 50
    assert squad_f1(["Denver Broncos", "Paris"], [["x", "Denver Broncos"], ["Lyon"]]) == 50.0
    # 'Santa Clara, California' vs 'Santa Clara': P = 2/3, R = 1 -> F1 = 0.8
    assert squad_f1(["Santa Clara, California"], [["Santa Clara"]]) == pytest.approx(80.0)
    assert exact_match(["Santa Clara, California"], [["Santa Clara"]]) == 0.0


def _squad_file(path: Path, answer_start: int = 8, text: str = "Bob") -> Path:
    data = {
        "version": "1.1",
        "data": [
            {
                "title": t,
                "paragraphs": [
                    {
                        "context": "Ann met Bob in Paris.",
                        "qas": [
                            {
                                "id": f"q-{t}",
                                "question": "Who?",
                                "answers": [
                                    {"text": text, "answer_start": answer_start},
                                    {"text": "Bob in Paris", "answer_start": 8},
                                ],
                            }
                        ],
                    }
                ],
            }
            for t in ("A", "B", "C", "D", "E")
        ],
    }
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def test_squad_reader_rows_and_split_by_article(tmp_path: Path) -> None:
    path = _squad_file(tmp_path / "s.json")
    rows = READERS.get("squad").read(DataConfig(format="squad", files={"dev": str(path)}), "dev")
    assert len(rows) == 5 and [a["text"] for a in rows[0]["answers"]] == ["Bob", "Bob in Paris"]
    assert rows[0]["_where"] == f"{path}:11" and rows[0]["title"] == "A"
    data = DataConfig(
        format="squad", files={"train": str(path)}, split_by_article={"train": 0.6, "dev": 0.2, "test": 0.2}
    )
    parts = {s: READERS.get("squad").read(data, s) for s in ("train", "dev", "test")}
    titles = {s: {r["title"] for r in rows} for s, rows in parts.items()}
    assert [len(titles[s]) for s in ("train", "dev", "test")] == [3, 1, 1]
    assert set.union(*titles.values()) == set("ABCDE")
    assert READERS.get("squad").splits(data) == ["train", "dev", "test"]
    again = split_articles(
        READERS.get("squad").read(DataConfig(format="squad", files={"dev": str(path)}), "dev"),
        {"train": 0.6, "dev": 0.2, "test": 0.2},
        0,
    )
    assert {s: [r["id"] for r in v] for s, v in again.items()} == {
        s: [r["id"] for r in v] for s, v in parts.items()
    }


def test_squad_reader_refuses_an_answer_off_its_offset(tmp_path: Path) -> None:
    path = _squad_file(tmp_path / "bad.json", answer_start=9)
    with pytest.raises(DataError, match=r"bad\.json:11 \(question q-A\): answer 0 'Bob' does not match") as e:
        READERS.get("squad").read(DataConfig(format="squad", files={"dev": str(path)}), "dev")
    assert "'ob '" in str(e.value)  # what the context reads at that offset
    path.write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json:1: not valid JSON"):
        READERS.get("squad").read(DataConfig(format="squad", files={"dev": str(path)}), "dev")


def test_bad_answer_in_jsonl_is_one_data_error(tokenizing: Tokenizing) -> None:
    rows = _rows()
    rows[0]["answers"] = [{"text": "Paris", "answer_start": 3}]
    with pytest.raises(DataError, match=r"in\.jsonl:1: answer 0 'Paris' does not match"):
        encode_rows(rows, _task(), "train", tokenizing)


def test_head_loss_and_merging_quantities() -> None:
    torch.manual_seed(0)
    head = build_head(
        SimpleNamespace(head="span_qa", num_outputs=2, pooling="cls", dropout=0.0), hidden_size=8
    )
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        logits = head(hidden, mask, None)
    assert tuple(logits.shape) == (2, 5, 2)
    assert (logits[1, 3:] < -1e3).all()  # padding masked
    labels = torch.tensor([[1, 3], [0, 0]])
    want = (
        torch.nn.functional.cross_entropy(logits[..., 0], labels[:, 0])
        + torch.nn.functional.cross_entropy(logits[..., 1], labels[:, 1])
    ) / 2
    assert QA.loss(logits, labels) == pytest.approx(float(want))
    gold_ll = QA.fisher_log_likelihood(logits, labels, "gold", torch.Generator())
    logp = torch.log_softmax(logits, dim=1)
    assert float(gold_ll) == pytest.approx(
        float(logp[0, 1, 0] + logp[0, 3, 1] + logp[1, 0, 0] + logp[1, 0, 1])
    )
    assert float(QA.prediction_entropy(logits, mask)) > 0


def test_predict_split_cuts_answers_from_the_context(tokenizing: Tokenizing, tiny_model_dir: Path) -> None:
    from transformers import AutoModel

    from mtfuse.evaluate import predict_encoded, score
    from mtfuse.model import MultiTaskModel
    from mtfuse.model.multitask import HeadSpec

    task = _task()
    enc, gold = encode_rows(_rows(), task, "dev", tokenizing)
    spec = HeadSpec("qa", "span_qa", "span_qa", 2, "cls", 0.0)
    model = MultiTaskModel.build(AutoModel.from_pretrained(str(tiny_model_dir)), {"qa": spec})
    preds, probs = predict_encoded(model, task, enc, 4, torch.device("cpu"), 0)
    (p,), (d,) = preds, probs
    assert d.shape == (len(words_of(CONTEXT)), 2) and np.allclose(d.sum(axis=0), 1, atol=1e-4)
    assert CONTEXT[p["start"] : p["end"]] == p["answer"] and p["answer"]
    s, e = p["words"]
    assert 0 <= s <= e < s + 30 and p["score"] == pytest.approx(d[s, 0] * d[e, 1], abs=1e-6)
    rec = QA.record(p, d, None)
    assert set(rec) >= {"answer", "start", "end", "score", "probs"}
    metrics = score(task, preds, gold)
    assert set(metrics) == {"exact_match", "squad_f1"}
    assert metrics["exact_match"] == (100.0 if p["answer"] == ANSWER else 0.0)


def test_examples_counts_questions_not_windows(tokenizing: Tokenizing) -> None:
    """A long context takes several windows; metrics and results count it as the one question it is."""
    task = _task()
    rows = _rows() + [{**_rows()[0], "question": "Which city?", "_where": "in.jsonl:2"}]
    enc, gold = encode_rows(rows, task, "dev", tokenizing)
    task.splits["dev"], task.gold["dev"] = enc, gold
    assert len(enc) > 2 * 2  # each context is cut into several windows
    assert task.examples("dev") == 2
    unlabelled, _ = encode_rows(rows, task, "test", tokenizing, with_labels=False)
    task.splits["test"], task.gold["test"] = unlabelled, []
    assert task.examples("test") == len(unlabelled)  # no gold: the encoded units


def test_first_sentence_baseline() -> None:
    gold = [{"context": "Ann met Bob. Then Paris.", "answers": [{"text": "Ann met Bob.", "answer_start": 0}]}]
    preds = QA.majority_predictions([], gold, None)
    assert preds == [{"answer": "Ann met Bob."}]


@pytest.mark.slow
@needs_xquad
@pytest.mark.parametrize("mode", ["sampled", "joint"])
def test_xquad_trains_beside_sst2_with_minilm(shared_data_dir: Path, tmp_path: Path, mode: str) -> None:
    """The real MiniLM, a few steps on an XQuAD slice (split by article) beside SST-2, in both step modes;
    then predict returns the answer text and its character span."""
    import yaml

    cfg = {
        "data_dir": str(shared_data_dir),
        "cache_dir": str(tmp_path / "cache"),
        "tasks": [
            {
                "name": "sst2",
                "type": "classification",
                "data": {"format": "glue", "task": "SST-2", "path": "{data_dir}/glue/SST-2"},
            },
            {
                "name": "xquad",
                "type": "span_qa",
                "max_length": 192,
                "data": {
                    "format": "squad",
                    "files": {"train": "{data_dir}/xquad/xquad.en.json"},
                    "split_by_article": {"train": 0.6, "dev": 0.2, "test": 0.2},
                },
            },
        ],
        "subset": {"train": 24, "eval": 12},
        "train": {
            "max_steps": 3,
            "batch_size": 8,
            "lr": 5e-5,
            "step_mode": mode,
            "progress": False,
            "tensorboard": False,
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    run = tmp_path / "run"
    code, out, err = run_cli(["train", path, "--output", run])
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"sst2", "xquad"}
    assert set(metrics["tasks"]["xquad"]) == {"exact_match", "squad_f1"}
    assert metrics["examples"]["xquad"] == 12  # questions (subset.eval), not their windows
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        json.dumps({"question": "Where did Ann meet Bob?", "context": "Ann met Bob in Paris."}) + "\n"
    )
    code, out, err = run_cli(
        ["predict", run, "--task", "xquad", "--input", inp, "--output", tmp_path / "p.jsonl"]
    )
    assert code == 0, err
    rec = json.loads((tmp_path / "p.jsonl").read_text())
    assert "Ann met Bob in Paris."[rec["start"] : rec["end"]] == rec["answer"] and 0 <= rec["score"] <= 1
