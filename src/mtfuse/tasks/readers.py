"""Data readers: turn one split of a task's data (``DataConfig``) into a list of plain row dicts.

One reader instance is registered per ``data.format`` in :data:`READERS`:

* ``glue``: the directory of one GLUE task in the standard download layout (CoLA, SST-2, MRPC, RTE, WNLI,
  STS-B); rows get canonical fields (``sentence`` or ``sentence1``/``sentence2``, and ``label``), labels stay
  strings as in the file.
* ``conll``: CoNLL-2003 style token-per-line files; rows are ``{"tokens": [...], "tags": [...]}``.
* ``csv``, ``tsv``, ``jsonl``, ``parquet``: generic files; rows keep the file's column names (csv / tsv
  without a header row: ``header: false`` and ``columns``; ``delimiter``, ``quoting``, ``encoding``).
* ``lines``: one example a line: the line is the field ``text``, or ``pattern`` (a regular expression with
  named groups) splits it into fields (``LABEL text`` lines), or ``field_files`` gives one file per field,
  aligned line by line (text and labels in separate files).
* ``hf``: a Hugging Face ``datasets`` dataset (hub name, ``save_to_disk`` directory or local data directory).

Every row also carries ``"_where"``, a location such as ``glue/RTE/dev.tsv:17`` (1-based line in the file, a
header counting as line 1) that later code quotes in its error messages. Readers only parse: they do not
validate labels or check that a task's text fields exist (except where a format fixes its own columns).
Every problem with the input is raised as :class:`~mtfuse.errors.DataError` (or ``ConfigError`` for a bad
config value) naming the file and line. Only regular files are read (a FIFO or a device would block or never
end). When ``data.files`` is given it lists every split: default file names are then not looked for.

Label ids -> names (``data.label_map``) and a dev split carved out of train (``data.dev_from_train``) need the
task's label field, so :mod:`mtfuse.tasks.prepare` applies them (with :func:`label_map` and
:func:`carve_dev` from here).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.registry import Registry

SPLITS = ("train", "dev", "test")
BOM = "\ufeff"

Row = dict[str, Any]


class Reader:
    """What every data format provides. Subclasses override all three methods."""

    format = "?"

    def splits(self, data: DataConfig) -> list[str]:
        """The canonical splits (a subset of train/dev/test, in that order) this data provides."""
        raise NotImplementedError

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        """Default ``(text_fields, label_field)`` for a task config that names none."""
        return None, None

    def read(self, data: DataConfig, split: str) -> list[Row]:
        """All rows of ``split``; each a dict of the row's fields plus ``"_where"``."""
        raise NotImplementedError


READERS: Registry[Reader] = Registry("data format")


def read_split(data: DataConfig, split: str) -> list[Row]:
    """Read one split of a task's data with the reader its ``format`` names."""
    return READERS.get(data.format).read(data, split)


# --------------------------------------------------------------------------------------------- helpers


def _regular_file(path: Path) -> Path:
    """``path`` if it is a regular file (or a link to one); anything else is refused before it is opened."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a plain file"
        )
        raise DataError(f"{path}: is {kind}, not a regular file; data must be read from regular files")
    return path


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file, strictly decoded (default UTF-8), without a leading UTF-8 byte-order mark."""
    _regular_file(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    utf8 = codecs.lookup(encoding).name == "utf-8"
    # Drop the BOM by hand (rather than decoding 'utf-8-sig') so error offsets stay those of the raw bytes.
    if utf8 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].decode(encoding, errors="replace").count("\n") + 1
        name = "UTF-8" if utf8 else encoding
        raise DataError(
            f"{where(path, line)}: not valid {name} (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8 "
            f"or set data.encoding (for example iso-8859-1)"
        ) from None


def _blank(line: str) -> bool:
    """Nothing but white space (and byte-order marks, as where files were concatenated)."""
    return not line.replace(BOM, "").strip()


def _split_lines(text: str) -> list[str]:
    """Every line, line endings removed. Splits on "\\n" only: str.splitlines() also breaks on \\x0b,
    \\x1c, \\u2028..., which may occur inside text."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _lines(path: Path, encoding: str = "utf-8") -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line, line endings removed."""
    lines = _split_lines(_read_text(path, encoding))
    return [(number, line) for number, line in enumerate(lines, start=1) if not _blank(line)]


def _check_field_count(cells: list[str], allowed: tuple[int, ...], path: Path, line: int) -> None:
    if len(cells) in allowed:
        return
    expected = " or ".join(map(str, allowed))
    hint = " (a tab inside a text field?)" if len(cells) > min(allowed) else ""
    raise DataError(
        f"{where(path, line)}: row has {len(cells)} tab-separated fields, expected {expected}{hint}"
    )


def _resolve(data: DataConfig, file: str) -> Path:
    """A ``data.files`` entry: relative paths are relative to ``data.path`` when that is set."""
    p = Path(file).expanduser()
    if not p.is_absolute() and data.path:
        p = Path(data.path) / p
    return p


def _split_files(data: DataConfig, defaults: dict[str, tuple[str, ...]]) -> dict[str, Path]:
    """split -> file: ``data.files`` when given (all of it: a partial map is not completed with default
    names, which could pick up a file nobody meant), else the default file names found in ``data.path``."""
    unknown = [k for k in data.files if k not in SPLITS]
    if unknown:
        raise ConfigError(
            f"data.files key '{unknown[0]}' is not a split; use {', '.join(SPLITS)} "
            f"(for example dev: valid.txt)"
        )
    found: dict[str, Path] = {}
    if data.path is not None and not data.files:
        folder = Path(data.path)
        if not folder.is_dir():
            raise DataError(f"data directory not found: {folder}")
        for split, names in defaults.items():
            existing = [folder / n for n in names if (folder / n).exists()]  # a FIFO is refused later
            if existing:
                found[split] = existing[0]
    elif data.path is not None and not Path(data.path).is_dir():
        raise DataError(f"data directory not found: {data.path}")
    for split, file in data.files.items():
        found[split] = _resolve(data, file)
    return {s: found[s] for s in SPLITS if s in found}


def _split_file(files: dict[str, Any], split: str, what: str, data: DataConfig | None = None) -> Any:
    if split not in files:
        hint = ""
        if data is not None and data.files:
            hint = " (data.files lists every split; default file names are not looked for when it is given)"
        raise DataError(f"split '{split}' not found for {what}; available: {list(files)}{hint}")
    return files[split]


def _no_rows(path: object) -> DataError:
    return DataError(f"{path}: no rows (the split is empty)")


# ------------------------------------------------------------------------------------------------- GLUE


@dataclass(frozen=True)
class _GlueTask:
    """How one GLUE task's files look. ``columns`` maps an output field to a header name or column index."""

    name: str
    files: dict[str, str]
    columns: dict[str, str | int]
    header: bool = True
    fields: tuple[int, ...] = ()  # the tab-separated field counts a row may have when there is no header

    @property
    def text_fields(self) -> list[str]:
        return [c for c in self.columns if c != "label"]


_TSV_FILES = {"train": "train.tsv", "dev": "dev.tsv"}
_PAIR = {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}

GLUE_TASKS = {
    "cola": _GlueTask("CoLA", _TSV_FILES, {"sentence": 3, "label": 1}, header=False, fields=(4,)),
    "sst2": _GlueTask("SST-2", _TSV_FILES, {"sentence": "sentence", "label": "label"}),
    "mrpc": _GlueTask(
        "MRPC", _TSV_FILES, {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}
    ),
    "rte": _GlueTask("RTE", _TSV_FILES, _PAIR),
    "wnli": _GlueTask("WNLI", _TSV_FILES, _PAIR),
    # STS-B keeps the original STS Benchmark files; some rows carry 2 trailing source columns, ignored. A row
    # of 8 (or 10 or more) fields has a tab inside a sentence: an error, not a silently shifted sentence.
    "stsb": _GlueTask(
        "STS-B",
        {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"},
        {"sentence1": 5, "sentence2": 6, "label": 4},
        header=False,
        fields=(7, 9),
    ),
}


def glue_task(data: DataConfig) -> _GlueTask:
    """The GLUE task of ``data.task`` (any case, 'SST-2' or 'sst2'); default: the directory's name."""
    if data.path is None:
        raise ConfigError("data.path must name the GLUE task directory (for example {data_dir}/glue/RTE)")
    name = data.task or Path(data.path).name
    key = name.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        choices = ", ".join(t.name for t in GLUE_TASKS.values())
        raise ConfigError(f"unknown GLUE task '{name}' (data.task); choose from [{choices}]")
    return GLUE_TASKS[key]


def _header_columns(header: list[str], wanted: dict[str, str | int], path: Path, line: int) -> dict[str, int]:
    """Output field -> column index, looking header names up in ``header``."""
    index: dict[str, int] = {}
    for field, col in wanted.items():
        if isinstance(col, int):
            index[field] = col
        elif col in header:
            index[field] = header.index(col)
        else:
            raise DataError(f"{where(path, line)}: missing column '{col}'; the header has columns {header}")
    return index


def _read_glue_file(path: Path, task: _GlueTask, encoding: str = "utf-8") -> list[Row]:
    # GLUE files hold quote characters that are not CSV quoting, so lines are split on tabs by hand.
    lines = _lines(path, encoding)
    if task.header:
        if not lines:
            raise _no_rows(path)
        header_line, header_text = lines[0]
        header = header_text.split("\t")
        columns = _header_columns(header, task.columns, path, header_line)
        allowed: tuple[int, ...] = (len(header),)
        lines = lines[1:]
    else:
        columns = {f: int(c) for f, c in task.columns.items()}
        allowed = task.fields
    rows = []
    for number, line in lines:
        cells = line.split("\t")
        _check_field_count(cells, allowed, path, number)
        row: Row = {field: cells[i] for field, i in columns.items()}
        row["_where"] = f"{path}:{number}"
        rows.append(row)
    if not rows:
        raise _no_rows(path)
    return rows


class GlueReader(Reader):
    """A GLUE task directory (``data.path``) in the standard download layout; ``data.task`` names the task."""

    format = "glue"

    def _files(self, data: DataConfig) -> dict[str, Path]:
        task = glue_task(data)
        files = _split_files(data, {s: (f,) for s, f in task.files.items()})
        if not files:
            expected = ", ".join(task.files.values())
            raise DataError(f"no {task.name} data files ({expected}) in task dir {data.path}")
        return files

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return glue_task(data).text_fields, "label"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        path = _split_file(self._files(data), split, f"task dir {data.path}", data)
        return _read_glue_file(path, glue_task(data), data.encoding)


READERS.register("glue")(GlueReader())


# ----------------------------------------------------------------------------------------------- CoNLL


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

    text = _read_text(path, encoding)
    for number, line in enumerate(text.split("\n"), start=1):
        if BOM in line:
            if _blank(line):
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
        raise _no_rows(path)
    return rows


class ConllReader(Reader):
    """A directory (``data.path``) with train.txt / valid.txt / test.txt; ``data.files`` may override."""

    format = "conll"
    default_files = {"train": ("train.txt",), "dev": ("valid.txt", "dev.txt"), "test": ("test.txt",)}

    def _files(self, data: DataConfig) -> dict[str, Path]:
        if data.path is None and not data.files:
            raise ConfigError("format 'conll' needs data.path (a directory with train.txt...) or data.files")
        files = _split_files(data, self.default_files)
        if not files:
            raise DataError(f"no CoNLL files (train.txt, valid.txt, test.txt) in task dir {data.path}")
        return files

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return ["tokens"], "tags"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        what = f"task dir {data.path}" if data.path else "data.files"
        return _read_conll_file(_split_file(self._files(data), split, what, data), data.encoding)


READERS.register("conll")(ConllReader())


# ------------------------------------------------------------------------- csv / tsv / jsonl / parquet


def _table_rows(path: Path, records: list[tuple[int, list[str]]], data: DataConfig, sep: str) -> list[Row]:
    """Rows of a table given ``(line number, cells)`` records: header-first, or named by ``data.columns``."""
    if not records:
        raise _no_rows(path)
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
        raise _no_rows(path)
    return rows


def _quoting(data: DataConfig, fmt: str) -> bool:
    return data.quoting if data.quoting is not None else fmt == "csv"


def _read_table(path: Path, data: DataConfig, fmt: str) -> list[Row]:
    """A csv / tsv file. With quoting on (csv's default), fields may be "quoted" and span lines; with it off
    (tsv's default, as in GLUE), quote characters are ordinary text and every line is one row."""
    sep = data.delimiter or ("\t" if fmt == "tsv" else ",")
    text = _read_text(path, data.encoding)
    if not _quoting(data, fmt):
        records = [(n, line.split(sep)) for n, line in enumerate(_split_lines(text), 1) if not _blank(line)]
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
            if cells and any(not _blank(c) for c in cells):
                records.append((start, cells))
    except csv.Error as e:
        raise DataError(f"{where(path, reader.line_num)}: malformed {fmt.upper()}: {e}") from None
    return _table_rows(path, records, data, sep)


def _read_csv(path: Path, data: DataConfig) -> list[Row]:
    return _read_table(path, data, "csv")


def _read_tsv(path: Path, data: DataConfig) -> list[Row]:
    return _read_table(path, data, "tsv")


def _read_jsonl(path: Path, data: DataConfig) -> list[Row]:
    rows = []
    for number, line in _lines(path, data.encoding):
        try:
            obj = json.loads(line.lstrip(BOM))
        except json.JSONDecodeError as e:
            raise DataError(f"{where(path, number)}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where(path, number)}: expected a JSON object, got {type(obj).__name__}")
        obj["_where"] = f"{path}:{number}"
        rows.append(obj)
    if not rows:
        raise _no_rows(path)
    return rows


def _read_parquet(path: Path, data: DataConfig) -> list[Row]:
    """Parquet rows; ``_where`` is ``path:N`` with N the 1-based row number (there are no lines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _regular_file(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file: {e}") from None
    rows = table.to_pylist()
    for number, row in enumerate(rows, start=1):
        row["_where"] = f"{path}:{number}"
    if not rows:
        raise _no_rows(path)
    return rows


class FileReader(Reader):
    """One file per split: ``data.files`` (split -> path, relative to ``data.path`` when set), or
    ``train.EXT`` / ``dev.EXT`` / ``test.EXT`` found in ``data.path``. Rows keep the file's column names."""

    def __init__(self, format: str, parse: Callable[[Path, DataConfig], list[Row]]) -> None:
        self.format = format
        self.parse = parse

    def _files(self, data: DataConfig) -> dict[str, Path]:
        ext = self.format
        files = _split_files(data, {s: (f"{s}.{ext}",) for s in SPLITS})
        if not files:
            raise ConfigError(
                f"format '{ext}' needs data.files (split -> file), or data.path with train.{ext} / "
                f"dev.{ext} / test.{ext}"
            )
        return files

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def read(self, data: DataConfig, split: str) -> list[Row]:
        what = f"format '{self.format}' (data.files / data.path)"
        return self.parse(_split_file(self._files(data), split, what, data), data)


READERS.register("csv")(FileReader("csv", _read_csv))
READERS.register("tsv")(FileReader("tsv", _read_tsv))
READERS.register("jsonl")(FileReader("jsonl", _read_jsonl))
READERS.register("parquet")(FileReader("parquet", _read_parquet))


# ----------------------------------------------------------------------------------------------- lines


def _pattern_rows(path: Path, data: DataConfig) -> list[Row]:
    """Each non-blank line is one example: the field ``text``, or the named groups of ``data.pattern``."""
    regex = re.compile(data.pattern) if data.pattern else None
    rows = []
    for number, line in _lines(path, data.encoding):
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
        raise _no_rows(path)
    return rows


def _aligned_rows(files: dict[str, Path], encoding: str) -> list[Row]:
    """One example a line across several files (one a field): line i of every file is example i."""
    texts = {}
    for field, path in files.items():
        lines = _split_lines(_read_text(path, encoding))
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
        blank = [f for f, v in values.items() if _blank(v)]
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
        raise _no_rows(first_path)
    return rows


class LinesReader(Reader):
    """One example a line. ``data.files`` (or train.txt / dev.txt / test.txt in ``data.path``) with each line
    the field ``text`` or split by ``data.pattern`` into its named groups; or ``data.field_files``: one file
    per field, ``{split}`` in each name (mapped by ``data.splits``, e.g. dev: valid), aligned line by line."""

    format = "lines"

    def _files(self, data: DataConfig) -> dict[str, dict[str, Path]]:
        """split -> field -> file (the field ``""`` = the whole line, split by the pattern if any)."""
        if not data.field_files:
            files = _split_files(data, {s: (f"{s}.txt",) for s in SPLITS})
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
            paths = {f: _resolve(data, t.replace("{split}", name)) for f, t in data.field_files.items()}
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
        files = _split_file(self._files(data), split, "format 'lines'", data)
        if "" in files:
            return _pattern_rows(files[""], data)
        return _aligned_rows(files, data.encoding)


READERS.register("lines")(LinesReader())


# ----------------------------------------------------------------------------------- Hugging Face hub


_HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


@lru_cache(maxsize=8)
def _load_hf(name: str, config_name: str | None) -> dict[str, Any]:
    """source split -> ``datasets.Dataset``, from a ``save_to_disk`` directory or ``load_dataset``."""
    import datasets

    local = Path(name).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(name, config_name)
    except ConnectionError as e:  # also what offline mode raises
        raise DataError(
            f"hf dataset '{name}' could not be downloaded (offline? {e}); download it elsewhere and point "
            f"data.name at a local copy (save_to_disk directory), or use the csv / jsonl / parquet readers"
        ) from None
    except FileNotFoundError as e:  # datasets' DatasetNotFoundError is one
        raise DataError(
            f"hf dataset '{name}' not found (not a local directory, and not on the hub or could not be "
            f"downloaded): {e}"
        ) from None
    except Exception as e:  # a bad config name, a corrupt directory...: report without a traceback
        raise DataError(f"hf dataset '{name}' could not be loaded: {type(e).__name__}: {e}") from None
    if isinstance(loaded, datasets.Dataset):  # a single saved Dataset: its only split is train
        return {"train": loaded}
    return dict(loaded)


class HfReader(Reader):
    """A Hugging Face dataset: ``data.name`` (hub name or local directory), ``data.config_name``, and
    ``data.splits`` (split -> source split; default train, validation, test). ``_where`` is
    ``name[source split]:index`` (0-based). Rows are the dataset's rows unchanged (class labels stay ints)."""

    format = "hf"

    def _name(self, data: DataConfig) -> str:
        if not data.name:
            raise ConfigError("format 'hf' needs data.name (a hub dataset name or a local directory)")
        return data.name

    def _sources(self, data: DataConfig) -> dict[str, str]:
        """mtfuse split -> source split, for the splits the dataset has."""
        name = self._name(data)
        unknown = [k for k in data.splits if k not in SPLITS]
        if unknown:
            raise ConfigError(f"data.splits key '{unknown[0]}' is not a split; use {', '.join(SPLITS)}")
        wanted = {**_HF_SPLITS, **data.splits}
        present = _load_hf(name, data.config_name)
        return {s: wanted[s] for s in SPLITS if wanted[s] in present}

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._sources(data))

    def read(self, data: DataConfig, split: str) -> list[Row]:
        name, sources = self._name(data), self._sources(data)
        if split not in sources:
            present = list(_load_hf(name, data.config_name))
            raise DataError(
                f"split '{split}' not found for hf dataset '{name}'; available: {list(sources)} "
                f"(the dataset's splits: {present}; map them with data.splits)"
            )
        source = sources[split]
        rows = _load_hf(name, data.config_name)[source].to_list()
        for index, row in enumerate(rows):
            row["_where"] = f"{name}[{source}]:{index}"
        if not rows:
            raise _no_rows(f"{name}[{source}]")
        return rows


READERS.register("hf")(HfReader())


# ------------------------------------------------------------------ label ids -> names, dev from train


def _label_map_file(path: Path, data: DataConfig) -> dict[str, str]:
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(_read_text(path, data.encoding))
        except json.JSONDecodeError as e:
            raise DataError(f"{where(path, e.lineno)}: invalid JSON: {e.msg}") from None
        if isinstance(obj, list):
            obj = {str(data.label_map_start + i): v for i, v in enumerate(obj)}
        if not isinstance(obj, dict) or not all(isinstance(v, (str, int)) for v in obj.values()):
            raise DataError(f"{path}: a JSON label map is an object {{id: name}} or a list of names")
        return {str(k): str(v) for k, v in obj.items()}
    lines = [(n, line.strip()) for n, line in _lines(path, data.encoding)]
    if not lines:
        raise DataError(f"{path}: the label map is empty")
    pairs = [line.split(None, 1) for _, line in lines]
    with_id = [len(p) == 2 and _is_int(p[0]) for p in pairs]
    if not any(with_id):  # one name a line
        out: dict[str, str] = {}
        for i, (_, name) in enumerate(lines):
            out[str(data.label_map_start + i)] = name.lstrip(BOM)
        return _unique_names(out, path)
    out = {}
    for (number, _), p, ok in zip(lines, pairs, with_id, strict=True):
        if not ok:
            raise DataError(
                f"{where(path, number)}: expected 'ID NAME' (as the other lines of the label map)"
            )
        key = str(int(p[0]))
        if key in out:
            raise DataError(f"{where(path, number)}: label id {key} given twice")
        out[key] = p[1].strip()
    return _unique_names(out, path)


def _is_int(text: str) -> bool:
    try:
        int(text.lstrip(BOM))
    except ValueError:
        return False
    return True


def _unique_names(mapping: dict[str, str], source: object) -> dict[str, str]:
    seen: dict[str, str] = {}
    for k, v in mapping.items():
        if v in seen:
            raise DataError(f"{source}: label name '{v}' is given to ids {seen[v]} and {k}")
        seen[v] = k
    return mapping


def label_map(data: DataConfig) -> dict[str, str] | None:
    """``data.label_map`` as id (a string) -> name, or None when there is none."""
    if data.label_map is None:
        return None
    if isinstance(data.label_map, dict):
        return _unique_names(dict(data.label_map), "data.label_map")
    return _label_map_file(_resolve(data, data.label_map), data)


def _id_key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def apply_label_map(
    rows: list[Row], field: str, mapping: dict[str, str], source: object, many: bool = False
) -> list[Row]:
    """Rows with ``field``'s ids replaced by their names: each id of a list (multi-label, a token task's tags)
    and, with ``many``, each of a string's space-separated ids (a token task's tags on one line)."""

    def name(value: Any, row: Row) -> str:
        key = _id_key(value)
        if key not in mapping:
            shown = list(mapping) if len(mapping) <= 20 else [*list(mapping)[:20], "..."]
            raise DataError(
                f"{row['_where']} (field '{field}'): label id '{key}' is not in the label map {source} "
                f"(ids: {shown})"
            )
        return mapping[key]

    out = []
    for row in rows:
        value = row.get(field)
        if value is None:
            out.append(row)  # a missing field is reported by the field checks, naming the row
            continue
        if isinstance(value, (list, tuple)):
            mapped: Any = [name(v, row) for v in value]
        elif many and isinstance(value, str):  # tags of format 'lines': "0 0 3 4 0"
            mapped = " ".join(name(v, row) for v in value.split())
        else:
            mapped = name(value, row)
        out.append({**row, field: mapped})
    return out


def _stratum(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value.strip()


def carve_dev(rows: list[Row], fraction: float, seed: int, stratify: str | None, source: str) -> list[int]:
    """Indices (sorted) of the train rows that become the dev split: ``round(fraction * n)`` of them (at
    least 1, at most n - 1), seeded; with ``stratify``, every value of that field keeps its share (largest
    remainders get the rounding), so rare classes reach dev when they can."""
    n = len(rows)
    if n < 2:
        raise DataError(f"{source}: train has {n} row(s); too few to carve a dev split out of it")
    n_dev = min(max(round(fraction * n), 1), n - 1)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        key = _stratum(row.get(stratify)) if stratify else ""
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    quota = [len(groups[k]) * n_dev / n for k in keys]
    take = [int(q) for q in quota]
    by_remainder = sorted(range(len(keys)), key=lambda j: (-(quota[j] - take[j]), j))
    for j in by_remainder[: n_dev - sum(take)]:
        take[j] += 1
    rng = np.random.default_rng([seed, zlib.crc32(b"dev_from_train")])
    dev: list[int] = []
    for k, t in zip(keys, take, strict=True):
        members = groups[k]
        dev.extend(members[j] for j in rng.choice(len(members), size=t, replace=False))
    return sorted(dev)
