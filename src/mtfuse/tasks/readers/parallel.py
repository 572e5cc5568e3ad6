"""Format ``parallel``: two aligned plain-text files per split, one segment a line (line i of the source file
is translated by line i of the target file), gzip-compressed when the name ends in ``.gz`` (Multi30k).

``data.files`` maps each split to a file *stem* and ``data.languages`` (default ``[src, tgt]``... see
below) gives the two suffixes: ``{train: train, dev: val}`` with ``path: multi30k`` and suffixes ``.en.gz`` /
``.de.gz`` reads ``multi30k/train.en.gz`` and ``multi30k/train.de.gz``. Rows are ``{"source", "target"}``.
Files of different lengths and an empty line (source or target) are errors naming the file and line.
"""

from __future__ import annotations

import gzip
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
    regular_file,
    split_file,
    split_files,
    split_lines,
)


def _lines(path: Path, encoding: str) -> list[str]:
    """Every line of a text file (gunzipped when it ends in .gz), the final newline not counted."""
    if path.suffix == ".gz":
        regular_file(path)
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from None
        try:
            text = raw.decode(encoding).removeprefix(BOM)
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise DataError(f"{where(path, line)}: not valid {encoding}; set data.encoding") from None
    else:
        text = read_text(path, encoding)
    lines = split_lines(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parallel_rows(source: Path, target: Path, encoding: str = "utf-8") -> list[Row]:
    """Aligned ``{"source", "target", "_where"}`` rows of two files of the same length, no line empty."""
    src, tgt = _lines(source, encoding), _lines(target, encoding)
    if len(src) != len(tgt):
        raise DataError(
            f"{source} has {len(src)} lines but {target} has {len(tgt)}; parallel files must be aligned "
            "line by line (one segment a line in each)"
        )
    rows = []
    for i, (s, t) in enumerate(zip(src, tgt, strict=True), start=1):
        if is_blank(s):
            raise DataError(f"{where(source, i)}: empty source segment")
        if is_blank(t):
            raise DataError(f"{where(target, i)}: empty target segment")
        rows.append({"source": s.strip(), "target": t.strip(), "_where": f"{source}:{i}"})
    if not rows:
        raise no_rows(source)
    return rows


class ParallelReader(Reader):
    """Two aligned files per split: ``<stem><data.suffixes[0]>`` (source) and ``<stem><suffixes[1]>``
    (target), stems from ``data.files`` (default ``train`` / ``dev`` / ``test`` in ``data.path``)."""

    format = "parallel"

    def _suffixes(self, data: DataConfig) -> tuple[str, str]:
        if len(data.suffixes) != 2:
            raise ConfigError(
                "format 'parallel' needs data.suffixes: the source and target file endings, e.g. "
                "['.en.gz', '.de.gz']"
            )
        return data.suffixes[0], data.suffixes[1]

    def _files(self, data: DataConfig) -> dict[str, tuple[Path, Path]]:
        a, b = self._suffixes(data)
        stems = split_files(data, {s: (f"{s}{a}",) for s in ("train", "dev", "test")})
        out = {}
        for split, p in stems.items():
            stem = str(p)[: -len(a)] if str(p).endswith(a) else str(p)
            out[split] = (Path(stem + a), Path(stem + b))
        if not out:
            raise ConfigError(
                f"format 'parallel' needs data.files (split -> file stem) or data.path with train{a}"
            )
        return out

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return ["source"], "target"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        source, target = split_file(self._files(data), split, "format 'parallel'", data)
        return parallel_rows(source, target, data.encoding)


READERS.register("parallel")(ParallelReader())
