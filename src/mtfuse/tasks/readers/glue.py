"""Format ``glue``: the directory of one GLUE task in the standard download layout (CoLA, SST-2, MRPC, RTE,
WNLI, STS-B); ``data.task`` names the task (default: the directory's name). Rows get canonical fields
(``sentence`` or ``sentence1``/``sentence2``, and ``label``); labels stay strings as in the file.

The GLUE quirks handled here: the files are tab-separated but hold quote characters that are not CSV
quoting, so lines are split on tabs by hand; CoLA has no header row (label in column 1, sentence in
column 3); MRPC names its columns ``#1 String`` / ``#2 String`` / ``Quality``; STS-B keeps the original STS
Benchmark files (``sts-train.csv``... , tab-separated despite the name, no header), some of whose rows carry
2 trailing source columns. A row with another field count has a tab inside a text field: an error, never a
silently shifted sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.tasks.readers.base import READERS, Reader, Row, no_rows, nonblank_lines, split_file, split_files


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


def _check_field_count(cells: list[str], allowed: tuple[int, ...], path: Path, line: int) -> None:
    if len(cells) in allowed:
        return
    expected = " or ".join(map(str, allowed))
    hint = " (a tab inside a text field?)" if len(cells) > min(allowed) else ""
    raise DataError(
        f"{where(path, line)}: row has {len(cells)} tab-separated fields, expected {expected}{hint}"
    )


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
    lines = nonblank_lines(path, encoding)
    if task.header:
        if not lines:
            raise no_rows(path)
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
        raise no_rows(path)
    return rows


class GlueReader(Reader):
    """A GLUE task directory (``data.path``) in the standard download layout; ``data.task`` names the task."""

    format = "glue"

    def _files(self, data: DataConfig) -> dict[str, Path]:
        task = glue_task(data)
        files = split_files(data, {s: (f,) for s, f in task.files.items()})
        if not files:
            expected = ", ".join(task.files.values())
            raise DataError(f"no {task.name} data files ({expected}) in task dir {data.path}")
        return files

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return glue_task(data).text_fields, "label"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        path = split_file(self._files(data), split, f"task dir {data.path}", data)
        return _read_glue_file(path, glue_task(data), data.encoding)


READERS.register("glue")(GlueReader())
