"""Format ``conllu_srl``: dependency-based semantic role labelling in CoNLL-U + PropBank columns (Universal
PropBank, e.g. ``en_ewt-up-{dev,test}.conllu``): the 10 CoNLL-U columns, column 11 the roleset of each predicate
(``come.03``; ``_`` for other words), then one argument column per predicate, in sentence order, with the role
on the head word of each argument (``ARG0``, ``ARGM-TMP``, ``V`` on the predicate, ``_`` = none).

One row per predicate: ``{"words", "predicate" (0-based word index), "roleset", "roles" (one per word, ``_``
read as ``O``), "deprels", "heads" (0-based, -1 for the root), "sentence", "_where"}``. Default fields: text
``[words, predicate]``, label ``roles`` (task type ``srl``). ``_where`` is the predicate's line.

What the files hold besides that, and what is done with it:

* sentences without a predicate carry one empty argument column (the line ends with a tab) or none: no rows;
* a sentence whose argument columns do not match its rolesets one to one (more rolesets than columns): each
  column goes to the roleset word its ``V`` sits on; rolesets left without a column, and columns whose ``V``
  is on no roleset word, give no row (their arguments are unknown) and are counted in :func:`read_conllu_srl`'s
  statistics;
* multiword-token ranges (``3-4``) and enhanced-UD empty nodes (``8.1``) are not words of the basic tree: skipped.

A token line needs at least 11 columns, and every token line of a sentence as many as its first one; the
word ids must run 1, 2, 3, ... Anything else is a DataError naming the file and line.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.tasks.readers.base import (
    READERS,
    Reader,
    Row,
    no_rows,
    read_text,
    split_file,
    split_files,
    split_lines,
)

NONE = "_"
OUTSIDE = "O"  # the role of words that are no argument (``_`` in the file)
_FIRST_ARG = 11  # 0-based index of the first argument column


def _is_word(token_id: str) -> bool:
    return token_id.isdigit()


def _skipped(token_id: str) -> bool:
    """Multiword-token ranges (``3-4``) and empty nodes (``8.1``): not words of the basic tree."""
    return "-" in token_id or "." in token_id


def _sentence_rows(
    path: Path, lines: list[tuple[int, list[str]]], sent_id: str | None, stats: Counter[str]
) -> list[Row]:
    """The rows (one per predicate) of one sentence's word lines ``(line number, cells)``."""
    first_line, first = lines[0]
    width = len(first)
    for number, cells in lines:
        if len(cells) != width:
            raise DataError(
                f"{where(path, number)}: {len(cells)} columns, but this sentence's first word line "
                f"({where(path, first_line)}) has {width}"
            )
    for k, (number, cells) in enumerate(lines, start=1):
        if int(cells[0]) != k:
            raise DataError(f"{where(path, number)}: word id {cells[0]}, expected {k} (ids run 1, 2, 3, ...)")
    words = [c[1] for _, c in lines]
    rolesets = [(i, c[10]) for i, (_, c) in enumerate(lines) if c[10] not in (NONE, "")]
    columns = [[c[_FIRST_ARG + j] for _, c in lines] for j in range(width - _FIRST_ARG)]
    if not rolesets and all(v in ("", NONE) for col in columns for v in col):
        stats["sentences_without_predicate"] += 1
        return []
    for number, cells in lines:
        if any(not v.strip() for v in cells[_FIRST_ARG:]):
            raise DataError(f"{where(path, number)}: empty argument cell (use '_' for no role)")
    if len(rolesets) == len(columns):
        pairs = [
            (rolesets[j], col) for j, col in enumerate(columns)
        ]  # the j-th column is the j-th predicate's
    else:
        stats["sentences_rolesets_columns_differ"] += 1
        by_word = dict(rolesets)
        pairs, used = [], set()
        for col in columns:
            on = [i for i, r in enumerate(col) if r == "V" and i in by_word and i not in used]
            if on:
                used.add(on[0])
                pairs.append(((on[0], by_word[on[0]]), col))
            else:
                stats["columns_without_roleset"] += 1
        stats["rolesets_without_column"] += len(rolesets) - len(used)
    deprels = [c[7] for _, c in lines]
    heads = [int(c[6]) - 1 if c[6].isdigit() else -1 for _, c in lines]
    rows: list[Row] = []
    for (i, roleset), col in pairs:
        rows.append(
            {
                "words": list(words),
                "predicate": i,
                "roleset": roleset,
                "roles": [OUTSIDE if r == NONE else r for r in col],
                "deprels": deprels,
                "heads": heads,
                "sentence": sent_id or where(path, first_line),
                "_where": where(path, lines[i][0]),
            }
        )
    stats["predicates"] += len(rows)
    return rows


def read_conllu_srl(path: Path, encoding: str = "utf-8") -> tuple[list[Row], dict[str, int]]:
    """``(rows, statistics)``: one row per predicate, and counts of sentences, predicates and quirks."""
    stats: Counter[str] = Counter()
    rows: list[Row] = []
    block: list[tuple[int, list[str]]] = []
    sent_id: str | None = None

    def flush() -> None:
        nonlocal sent_id
        if block:
            stats["sentences"] += 1
            rows.extend(_sentence_rows(path, block, sent_id, stats))
        block.clear()
        sent_id = None

    for number, line in enumerate(split_lines(read_text(path, encoding)), start=1):
        if not line.strip():
            flush()
            continue
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip() == "sent_id":
                sent_id = value.strip()
            elif key.strip() == "propbank" and value.strip() == "no-up":
                stats["sentences_marked_no_up"] += 1  # not annotated: empty columns 11 and 12
            continue
        cells = line.split("\t")
        if len(cells) < 10:
            raise DataError(f"{where(path, number)}: {len(cells)} tab-separated columns; CoNLL-U has 10")
        if _skipped(cells[0]):
            stats["multiword_tokens" if "-" in cells[0] else "empty_nodes"] += 1
            continue
        if not _is_word(cells[0]):
            raise DataError(f"{where(path, number)}: word id {cells[0]!r} is not a number")
        if len(cells) < _FIRST_ARG:
            raise DataError(
                f"{where(path, number)}: {len(cells)} columns; expected 10 CoNLL-U columns, the roleset "
                f"(column 11) and one argument column per predicate"
            )
        block.append((number, cells))
    flush()
    if not stats["sentences"]:
        raise no_rows(path)
    return rows, dict(stats)


class ConlluSrlReader(Reader):
    """``data.files`` (or ``train``/``dev``/``test`` ``.conllu`` in ``data.path``)."""

    format = "conllu_srl"
    default_files = {
        "train": ("train.conllu", "en_ewt-up-train.conllu"),
        "dev": ("dev.conllu", "en_ewt-up-dev.conllu"),
        "test": ("test.conllu", "en_ewt-up-test.conllu"),
    }

    def _files(self, data: DataConfig) -> dict[str, Path]:
        files = split_files(data, self.default_files)
        if not files:
            raise ConfigError(
                "format 'conllu_srl' needs data.files or data.path (a folder with train/dev/test .conllu)"
            )
        return files

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return ["words", "predicate"], "roles"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        path = split_file(self._files(data), split, "format 'conllu_srl' (data.files / data.path)", data)
        rows, _ = read_conllu_srl(path, data.encoding)
        if not rows:
            raise DataError(f"{path}: no predicate in the file (column 11 holds no roleset)")
        return rows


READERS.register("conllu_srl")(ConlluSrlReader())
