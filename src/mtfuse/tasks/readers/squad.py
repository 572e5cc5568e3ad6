"""Format ``squad``: SQuAD v1.1 JSON (``data`` -> articles with ``title`` and ``paragraphs`` -> ``context`` and
``qas`` -> ``id``, ``question``, ``answers`` [{``text``, ``answer_start``}]), one file per split: ``data.files``,
or ``train-v1.1.json`` / ``dev-v1.1.json`` (or ``train.json`` / ``dev.json`` / ``test.json``) in ``data.path``.

Each question becomes ``{"id", "title", "question", "context", "answers", "_where"}``; every answer (SQuAD dev
has up to three per question) must be found in the context at its ``answer_start``, or the file is refused
with the question's id and line. Default fields: text ``[question, context]``, label ``answers`` (type
``span_qa``).

Data without a train split (XQuAD: 48 articles of SQuAD dev): ``data.split_by_article`` ({train: 0.6, dev:
0.2, test: 0.2}) divides the articles of the file named as train into those splits, seeded by
``data.dev_seed``; every paragraph of an article goes to one split, so no context is seen in two.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.tasks.readers.base import READERS, Reader, Row, no_rows, read_text, split_file, split_files
from mtfuse.tasks.types.span_qa import check_answers

_NAMES = {
    "train": ("train-v1.1.json", "train.json"),
    "dev": ("dev-v1.1.json", "dev.json"),
    "test": ("test.json",),
}


def _line_of(text: str, qid: object) -> int | None:
    at = text.find(json.dumps(str(qid)))
    return text.count("\n", 0, at) + 1 if at >= 0 else None


def read_squad(path: Path, encoding: str = "utf-8") -> list[Row]:
    """Every question of a SQuAD v1.1 file, its answers checked against its context."""
    text = read_text(path, encoding)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where(path, e.lineno)}: not valid JSON ({e.msg})") from None
    articles = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(articles, list):
        raise DataError(f"{path}: expected a SQuAD JSON object with a 'data' list of articles")
    rows: list[Row] = []
    for a, article in enumerate(articles):
        title = article.get("title", f"article {a}") if isinstance(article, dict) else None
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{path}: data[{a}] ({title}) has no 'paragraphs' list")
        for p, para in enumerate(paragraphs):
            context = para.get("context") if isinstance(para, dict) else None
            qas = para.get("qas") if isinstance(para, dict) else None
            if not isinstance(context, str) or not isinstance(qas, list):
                raise DataError(
                    f"{path}: data[{a}].paragraphs[{p}] ({title}) needs a 'context' and a 'qas' list"
                )
            for q, qa in enumerate(qas):
                qid = qa.get("id", f"data[{a}].paragraphs[{p}].qas[{q}]") if isinstance(qa, dict) else q
                loc = where(path, _line_of(text, qid) if isinstance(qa, dict) and "id" in qa else None)
                question = qa.get("question") if isinstance(qa, dict) else None
                if not isinstance(question, str) or not question.strip():
                    raise DataError(f"{loc} (question {qid}): no question text")
                answers = check_answers(qa.get("answers"), context, loc, qid)
                rows.append(
                    {
                        "id": str(qid),
                        "title": str(title),
                        "question": question,
                        "context": context,
                        "answers": answers,
                        "_where": loc,
                    }
                )
    if not rows:
        raise no_rows(path)
    return rows


def split_articles(rows: list[Row], fractions: dict[str, float], seed: int) -> dict[str, list[Row]]:
    """The rows of whole articles (by ``title``) in each split: a seeded shuffle of the titles cut by the
    fractions (each split at least one article), file order kept inside a split."""
    titles = list(dict.fromkeys(r["title"] for r in rows))
    names = [s for s in ("train", "dev", "test") if s in fractions]
    if len(titles) < len(names):
        raise DataError(f"{len(titles)} article(s) cannot be split into {names} by article")
    order = np.random.default_rng([seed, zlib.crc32(b"split_by_article")]).permutation(len(titles))
    counts = [max(1, round(fractions[s] * len(titles))) for s in names]
    counts[0] = len(titles) - sum(counts[1:])  # train takes the rounding
    if counts[0] < 1:
        raise DataError(f"{len(titles)} article(s) leave none for train with split_by_article {fractions}")
    where_to, at = {}, 0
    for s, n in zip(names, counts, strict=True):
        for k in order[at : at + n]:
            where_to[titles[k]] = s
        at += n
    return {s: [r for r in rows if where_to[r["title"]] == s] for s in names}


class SquadReader(Reader):
    format = "squad"

    def _files(self, data: DataConfig) -> dict[str, Path]:
        files = split_files(data, _NAMES)
        if not files:
            raise ConfigError("format 'squad' needs data.files (split -> SQuAD JSON file) or data.path")
        return files

    def splits(self, data: DataConfig) -> list[str]:
        if data.split_by_article:
            return [s for s in ("train", "dev", "test") if s in data.split_by_article]
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return ["question", "context"], "answers"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        files = self._files(data)
        if data.split_by_article:
            if "train" not in files or len(files) > 1:
                raise ConfigError(
                    "data.split_by_article divides one file: name it as the train split only "
                    f"(data.files: {{train: FILE}}); got splits {list(files)}"
                )
            parts = split_articles(
                read_squad(files["train"], data.encoding), data.split_by_article, data.dev_seed
            )
            if split not in parts:
                raise DataError(f"split '{split}' not found for format 'squad'; available: {list(parts)}")
            return parts[split]
        path = split_file(files, split, "format 'squad' (data.files / data.path)", data)
        return read_squad(path, data.encoding)


READERS.register("squad")(SquadReader())
