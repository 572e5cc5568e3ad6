"""Data readers: turn one split of a task's data (``DataConfig``) into a list of plain row dicts.

One reader instance is registered per ``data.format`` in :data:`READERS`:

* ``glue``: the directory of one GLUE task in the standard download layout (CoLA, SST-2, MRPC, RTE, WNLI,
  STS-B); rows get canonical fields (``sentence`` or ``sentence1``/``sentence2``, and ``label``), labels stay
  strings as in the file.
* ``conll``: CoNLL-2003 style token-per-line files; rows are ``{"tokens": [...], "tags": [...]}``.
* ``csv``, ``tsv``, ``jsonl``, ``parquet``: generic files; rows keep the file's column names.
* ``hf``: a Hugging Face ``datasets`` dataset (hub name, ``save_to_disk`` directory or local data directory).

Every row also carries ``"_where"``, a location such as ``glue/RTE/dev.tsv:17`` (1-based line in the file, a
header counting as line 1) that later code quotes in its error messages. Readers only parse: they do not
validate labels or check that a task's text fields exist (except where a format fixes its own columns).
Every problem with the input is raised as :class:`~mtfuse.errors.DataError` (or ``ConfigError`` for a bad
config value) naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.registry import Registry

SPLITS = ("train", "dev", "test")

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


def _read_text(path: Path) -> str:
    """The whole file, strictly UTF-8 decoded, without a leading byte-order mark."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    # Drop the BOM by hand (rather than decoding 'utf-8-sig') so error offsets stay those of the raw bytes.
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{where(path, line)}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8"
        ) from None


def _lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line, line endings removed."""
    text = _read_text(path)
    # Split on "\n" only: str.splitlines() also breaks on \x0b, \x1c, \u2028..., which may occur inside text.
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            out.append((number, line))
    return out


def _check_field_count(cells: list[str], low: int, high: int, path: Path, line: int) -> None:
    if low <= len(cells) <= high:
        return
    expected = str(low) if low == high else f"{low} to {high}"
    raise DataError(f"{where(path, line)}: row has {len(cells)} tab-separated fields, expected {expected}")


def _resolve(data: DataConfig, file: str) -> Path:
    """A ``data.files`` entry: relative paths are relative to ``data.path`` when that is set."""
    p = Path(file).expanduser()
    if not p.is_absolute() and data.path:
        p = Path(data.path) / p
    return p


def _split_files(data: DataConfig, defaults: dict[str, tuple[str, ...]]) -> dict[str, Path]:
    """split -> file: default file names found in ``data.path``, overridden by ``data.files``."""
    unknown = [k for k in data.files if k not in SPLITS]
    if unknown:
        raise ConfigError(
            f"data.files key '{unknown[0]}' is not a split; use {', '.join(SPLITS)} "
            f"(for example dev: valid.txt)"
        )
    found: dict[str, Path] = {}
    if data.path is not None:
        folder = Path(data.path)
        if not folder.is_dir():
            raise DataError(f"data directory not found: {folder}")
        for split, names in defaults.items():
            existing = [folder / n for n in names if (folder / n).is_file()]
            if existing:
                found[split] = existing[0]
    for split, file in data.files.items():
        found[split] = _resolve(data, file)
    return {s: found[s] for s in SPLITS if s in found}


def _split_file(files: dict[str, Path], split: str, what: str) -> Path:
    if split not in files:
        raise DataError(f"split '{split}' not found for {what}; available: {list(files)}")
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
    fields: tuple[int, int] = (0, 0)  # (min, max) tab-separated fields per row when there is no header

    @property
    def text_fields(self) -> list[str]:
        return [c for c in self.columns if c != "label"]


_TSV_FILES = {"train": "train.tsv", "dev": "dev.tsv"}
_PAIR = {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}

GLUE_TASKS = {
    "cola": _GlueTask("CoLA", _TSV_FILES, {"sentence": 3, "label": 1}, header=False, fields=(4, 4)),
    "sst2": _GlueTask("SST-2", _TSV_FILES, {"sentence": "sentence", "label": "label"}),
    "mrpc": _GlueTask(
        "MRPC", _TSV_FILES, {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}
    ),
    "rte": _GlueTask("RTE", _TSV_FILES, _PAIR),
    "wnli": _GlueTask("WNLI", _TSV_FILES, _PAIR),
    # STS-B keeps the original STS Benchmark files; some rows carry 2 trailing source columns, ignored.
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


def _read_glue_file(path: Path, task: _GlueTask) -> list[Row]:
    # GLUE files hold quote characters that are not CSV quoting, so lines are split on tabs by hand.
    lines = _lines(path)
    if task.header:
        if not lines:
            raise _no_rows(path)
        header_line, header_text = lines[0]
        header = header_text.split("\t")
        columns = _header_columns(header, task.columns, path, header_line)
        low = high = len(header)
        lines = lines[1:]
    else:
        columns = {f: int(c) for f, c in task.columns.items()}
        low, high = task.fields
    rows = []
    for number, line in lines:
        cells = line.split("\t")
        _check_field_count(cells, low, high, path, number)
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
        path = _split_file(self._files(data), split, f"task dir {data.path}")
        return _read_glue_file(path, glue_task(data))


READERS.register("glue")(GlueReader())


# ----------------------------------------------------------------------------------------------- CoNLL


def _read_conll_file(path: Path) -> list[Row]:
    """Sentences of a CoNLL file: one token a line, blank lines (and ``-DOCSTART-`` lines) between sentences.

    Column rule: every token line must have as many whitespace-separated columns as the file's first token
    line, and at least 2 (CoNLL-2003 has 4: token POS chunk NER). The token is the first column, the tag
    the last one.
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

    text = _read_text(path)
    for number, line in enumerate(text.split("\n"), start=1):
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
        return _read_conll_file(_split_file(self._files(data), split, what))


READERS.register("conll")(ConllReader())


# ------------------------------------------------------------------------- csv / tsv / jsonl / parquet


def _table_rows(path: Path, records: list[tuple[int, list[str]]]) -> list[Row]:
    """Rows of a header-first table given ``(line number, cells)`` records."""
    if not records:
        raise _no_rows(path)
    header_line, header = records[0]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DataError(f"{where(path, header_line)}: duplicate column names {duplicated} in the header")
    rows = []
    for number, cells in records[1:]:
        if len(cells) != len(header):
            few = "few" if len(cells) < len(header) else "many"
            raise DataError(
                f"{where(path, number)}: too {few} fields ({len(cells)}) for the header's {len(header)} "
                f"columns {header}"
            )
        row: Row = dict(zip(header, cells, strict=True))
        row["_where"] = f"{path}:{number}"
        rows.append(row)
    if not rows:
        raise _no_rows(path)
    return rows


def _read_csv(path: Path) -> list[Row]:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    records = []
    try:
        while True:
            start = reader.line_num + 1  # a quoted field may span lines: the record starts here
            try:
                cells = next(reader)
            except StopIteration:
                break
            if cells and any(c.strip() for c in cells):
                records.append((start, cells))
    except csv.Error as e:
        raise DataError(f"{where(path, reader.line_num)}: malformed CSV: {e}") from None
    return _table_rows(path, records)


def _read_tsv(path: Path) -> list[Row]:
    # Tab-separated, no quoting at all (quote characters are ordinary text, as in GLUE).
    return _table_rows(path, [(number, line.split("\t")) for number, line in _lines(path)])


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    for number, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where(path, number)}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where(path, number)}: expected a JSON object, got {type(obj).__name__}")
        obj["_where"] = f"{path}:{number}"
        rows.append(obj)
    if not rows:
        raise _no_rows(path)
    return rows


def _read_parquet(path: Path) -> list[Row]:
    """Parquet rows; ``_where`` is ``path:N`` with N the 1-based row number (there are no lines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"file not found: {path}")
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

    def __init__(self, format: str, parse: Callable[[Path], list[Row]]) -> None:
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
        return self.parse(_split_file(self._files(data), split, what))


READERS.register("csv")(FileReader("csv", _read_csv))
READERS.register("tsv")(FileReader("tsv", _read_tsv))
READERS.register("jsonl")(FileReader("jsonl", _read_jsonl))
READERS.register("parquet")(FileReader("parquet", _read_parquet))


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
