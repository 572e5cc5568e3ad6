"""Formats ``csv`` and ``tsv`` (one reader, two defaults): delimited text files, one per split. Rows keep
the file's column names (the header row), or take them from ``data.columns`` (``header: false``: a list of
names, or name -> 0-based index). ``data.delimiter`` overrides the separator (default ``,`` / tab);
``data.quoting`` turns CSV quoting on or off (default on for csv, off for tsv, where quote characters are
ordinary text as in GLUE); ``data.encoding`` sets the encoding.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import DataError, where
from mtfuse.tasks.readers.base import READERS, FileReader, Row, is_blank, no_rows, read_text, split_lines


def _table_rows(path: Path, records: list[tuple[int, list[str]]], data: DataConfig, sep: str) -> list[Row]:
    """Rows of a table given ``(line number, cells)`` records: header-first, or named by ``data.columns``."""
    if not records:
        raise no_rows(path)
    tab = " (a tab inside a text field?)" if sep == "\t" and not _quoting(data, "tsv") else ""
    if data.header:
        header_line, header = records[0]
        records = records[1:]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if duplicated:
            raise DataError(f"{where(path, header_line)}: duplicate column names {duplicated} in the header")
        names = {c: i for i, c in enumerate(header)}
        width, what = len(header), f"the header's {len(header)} columns {header}"
    elif isinstance(data.columns, dict):
        names = dict(data.columns)
        width, what = len(records[0][1]), f"the {len(records[0][1])} fields of the file's first row"
        need = max(names.values()) + 1
        if width < need:
            field = max(names, key=names.__getitem__)
            raise DataError(
                f"{where(path, records[0][0])}: {width} fields, but data.columns puts '{field}' at index "
                f"{names[field]} (0-based)"
            )
    else:
        cols = list(data.columns) if data.columns else [str(i) for i in range(len(records[0][1]))]
        names = {c: i for i, c in enumerate(cols)}
        width = len(cols)
        what = f"data.columns {cols}" if data.columns else f"the {width} fields of the file's first row"
    rows = []
    for number, cells in records:
        if len(cells) != width:
            few, hint = ("few", "") if len(cells) < width else ("many", tab)
            raise DataError(f"{where(path, number)}: too {few} fields ({len(cells)}) for {what}{hint}")
        row: Row = {name: cells[i] for name, i in names.items()}
        row["_where"] = f"{path}:{number}"
        rows.append(row)
    if not rows:
        raise no_rows(path)
    return rows


def _quoting(data: DataConfig, fmt: str) -> bool:
    return data.quoting if data.quoting is not None else fmt == "csv"


def _read_table(path: Path, data: DataConfig, fmt: str) -> list[Row]:
    """A csv / tsv file. With quoting on (csv's default), fields may be "quoted" and span lines; with it off
    (tsv's default, as in GLUE), quote characters are ordinary text and every line is one row."""
    sep = data.delimiter or ("\t" if fmt == "tsv" else ",")
    text = read_text(path, data.encoding)
    if not _quoting(data, fmt):
        records = [(n, line.split(sep)) for n, line in enumerate(split_lines(text), 1) if not is_blank(line)]
        return _table_rows(path, records, data, sep)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    records = []
    try:
        while True:
            start = reader.line_num + 1  # a quoted field may span lines: the record starts here
            try:
                cells = next(reader)
            except StopIteration:
                break
            if cells and any(not is_blank(c) for c in cells):
                records.append((start, cells))
    except csv.Error as e:
        raise DataError(f"{where(path, reader.line_num)}: malformed {fmt.upper()}: {e}") from None
    return _table_rows(path, records, data, sep)


def _read_csv(path: Path, data: DataConfig) -> list[Row]:
    return _read_table(path, data, "csv")


def _read_tsv(path: Path, data: DataConfig) -> list[Row]:
    return _read_table(path, data, "tsv")


READERS.register("csv")(FileReader("csv", _read_csv))
READERS.register("tsv")(FileReader("tsv", _read_tsv))
