"""Format ``conll``: CoNLL-2003 style token-per-line files (one token a line, blank lines between
sentences), in a directory with train.txt / valid.txt (or dev.txt) / test.txt, or named by ``data.files``.
Rows are ``{"tokens": [...], "tags": [...]}``: the first column is the token, the last one the tag.
"""

from __future__ import annotations

from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.tasks.readers.base import (
    BOM,
    READERS,
    Reader,
    Row,
    is_blank,
    no_rows,
    read_text,
    split_file,
    split_files,
)


def _read_conll_file(path: Path, encoding: str = "utf-8") -> list[Row]:
    """Sentences of a CoNLL file: one token a line, blank lines (and ``-DOCSTART-`` lines) between sentences.

    Column rule: every token line must have as many whitespace-separated columns as the file's first token
    line, and at least 2 (CoNLL-2003 has 4: token POS chunk NER). The token is the first column, the tag
    the last one. A line holding only a byte-order mark (files concatenated) is skipped, and one at the
    start of a line is dropped.
    """
    width = 0
    rows: list[Row] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if tokens:
            rows.append({"tokens": list(tokens), "tags": list(tags), "_where": f"{path}:{start}"})
            tokens.clear()
            tags.clear()

    text = read_text(path, encoding)
    for number, line in enumerate(text.split("\n"), start=1):
        if BOM in line:
            if is_blank(line):
                continue  # not a sentence boundary either: as if the line were not there
            line = line.lstrip(BOM)
        cells = line.split()
        if not cells or cells[0] == "-DOCSTART-":
            flush()
            continue
        if not width:
            if len(cells) < 2:
                raise DataError(f"{where(path, number)}: expected at least 2 columns (token ... tag)")
            width = len(cells)
        if len(cells) != width:
            raise DataError(
                f"{where(path, number)}: {len(cells)} columns, but the file's first token line has {width}"
            )
        if not tokens:
            start = number
        tokens.append(cells[0])
        tags.append(cells[-1])
    flush()
    if not rows:
        raise no_rows(path)
    return rows


class ConllReader(Reader):
    """A directory (``data.path``) with train.txt / valid.txt / test.txt; ``data.files`` may override."""

    format = "conll"
    default_files = {"train": ("train.txt",), "dev": ("valid.txt", "dev.txt"), "test": ("test.txt",)}

    def _files(self, data: DataConfig) -> dict[str, Path]:
        if data.path is None and not data.files:
            raise ConfigError("format 'conll' needs data.path (a directory with train.txt...) or data.files")
        files = split_files(data, self.default_files)
        if not files:
            raise DataError(f"no CoNLL files (train.txt, valid.txt, test.txt) in task dir {data.path}")
        return files

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return ["tokens"], "tags"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        what = f"task dir {data.path}" if data.path else "data.files"
        return _read_conll_file(split_file(self._files(data), split, what, data), data.encoding)


READERS.register("conll")(ConllReader())
