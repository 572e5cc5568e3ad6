"""Format ``lines``: plain text, one example a line. The line is the field ``text``, or ``data.pattern`` (a
regular expression with named groups) splits it into fields (``LABEL text`` lines), or ``data.field_files``
gives one file per field, aligned line by line (text and labels in separate files).
"""

from __future__ import annotations

import re
from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.tasks.readers.base import (
    BOM,
    READERS,
    SPLITS,
    Reader,
    Row,
    is_blank,
    no_rows,
    nonblank_lines,
    read_text,
    resolve_file,
    split_file,
    split_files,
    split_lines,
)


def _pattern_rows(path: Path, data: DataConfig) -> list[Row]:
    """Each non-blank line is one example: the field ``text``, or the named groups of ``data.pattern``."""
    regex = re.compile(data.pattern) if data.pattern else None
    rows = []
    for number, line in nonblank_lines(path, data.encoding):
        line = line.lstrip(BOM)
        if regex is None:
            row: Row = {"text": line}
        else:
            m = regex.match(line)
            if m is None:
                shown = line if len(line) <= 60 else line[:57] + "..."
                raise DataError(
                    f"{where(path, number)}: line {shown!r} does not match data.pattern {data.pattern!r}"
                )
            row = dict(m.groupdict())
        row["_where"] = f"{path}:{number}"
        rows.append(row)
    if not rows:
        raise no_rows(path)
    return rows


def _aligned_rows(files: dict[str, Path], encoding: str) -> list[Row]:
    """One example a line across several files (one a field): line i of every file is example i."""
    texts = {}
    for field, path in files.items():
        lines = split_lines(read_text(path, encoding))
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        texts[field] = lines
    (first, first_path), counts = next(iter(files.items())), {f: len(v) for f, v in texts.items()}
    for field, n in counts.items():
        if n != counts[first]:
            raise DataError(
                f"{files[field]}: {n} lines, but {first_path} has {counts[first]}; the files of "
                f"data.field_files must be aligned line by line (one example a line in each)"
            )
    rows = []
    for i in range(counts[first]):
        values = {f: texts[f][i].lstrip(BOM) for f in files}
        blank = [f for f, v in values.items() if is_blank(v)]
        if len(blank) == len(values):
            continue
        if blank:
            full = next(f for f in values if f not in blank)
            raise DataError(
                f"{where(files[blank[0]], i + 1)}: blank line, but line {i + 1} of {files[full]} is not "
                f"(one example a line in every file of data.field_files)"
            )
        rows.append({**values, "_where": f"{first_path}:{i + 1}"})
    if not rows:
        raise no_rows(first_path)
    return rows


class LinesReader(Reader):
    """One example a line. ``data.files`` (or train.txt / dev.txt / test.txt in ``data.path``) with each line
    the field ``text`` or split by ``data.pattern`` into its named groups; or ``data.field_files``: one file
    per field, ``{split}`` in each name (mapped by ``data.splits``, e.g. dev: valid), aligned line by line."""

    format = "lines"

    def _files(self, data: DataConfig) -> dict[str, dict[str, Path]]:
        """split -> field -> file (the field ``""`` = the whole line, split by the pattern if any)."""
        if not data.field_files:
            files = split_files(data, {s: (f"{s}.txt",) for s in SPLITS})
            if not files:
                raise ConfigError(
                    "format 'lines' needs data.files (split -> file), data.path with train.txt / dev.txt / "
                    "test.txt, or data.field_files (field -> file name with {split})"
                )
            return {s: {"": p} for s, p in files.items()}
        unknown = [k for k in data.splits if k not in SPLITS]
        if unknown:
            raise ConfigError(f"data.splits key '{unknown[0]}' is not a split; use {', '.join(SPLITS)}")
        if data.path is not None and not Path(data.path).is_dir():
            raise DataError(f"data directory not found: {data.path}")
        out: dict[str, dict[str, Path]] = {}
        for split in SPLITS:
            name = data.splits.get(split, split)
            paths = {f: resolve_file(data, t.replace("{split}", name)) for f, t in data.field_files.items()}
            present = [f for f, p in paths.items() if p.exists()]
            if present and len(present) < len(paths):
                lost = next(f for f in paths if f not in present)
                raise DataError(
                    f"file not found: {paths[lost]} (field '{lost}' of split '{split}'), but "
                    f"{paths[present[0]]} is there"
                )
            if present:
                out[split] = paths
        if not out:
            shown = ", ".join(
                t.replace("{split}", data.splits.get("train", "train")) for t in data.field_files.values()
            )
            raise DataError(f"no data.field_files found ({shown}, ... in {data.path or '.'})")
        return out

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        if data.field_files:
            fields = list(data.field_files)
        elif data.pattern:
            fields = list(re.compile(data.pattern).groupindex)
        else:
            fields = ["text"]
        text = next((f for f in ("text", "tokens", "sentence") if f in fields), None)
        label = next((f for f in ("label", "tags") if f in fields), None)
        return ([text] if text else None), label

    def read(self, data: DataConfig, split: str) -> list[Row]:
        files = split_file(self._files(data), split, "format 'lines'", data)
        if "" in files:
            return _pattern_rows(files[""], data)
        return _aligned_rows(files, data.encoding)


READERS.register("lines")(LinesReader())
