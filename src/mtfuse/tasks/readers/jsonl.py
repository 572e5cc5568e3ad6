"""Format ``jsonl``: JSON Lines, one JSON object a line (blank lines skipped), one file per split. Rows are
the objects, keys unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import DataError, where
from mtfuse.tasks.readers.base import BOM, READERS, FileReader, Row, no_rows, nonblank_lines


def _read_jsonl(path: Path, data: DataConfig) -> list[Row]:
    rows = []
    for number, line in nonblank_lines(path, data.encoding):
        try:
            obj = json.loads(line.lstrip(BOM))
        except json.JSONDecodeError as e:
            raise DataError(f"{where(path, number)}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where(path, number)}: expected a JSON object, got {type(obj).__name__}")
        obj["_where"] = f"{path}:{number}"
        rows.append(obj)
    if not rows:
        raise no_rows(path)
    return rows


READERS.register("jsonl")(FileReader("jsonl", _read_jsonl))
