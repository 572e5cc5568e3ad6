"""Format ``parquet``: Apache Parquet files (read with pyarrow), one per split. Rows are the table's rows,
column names unchanged; ``_where`` is ``path:N`` with N the 1-based row number.
"""

from __future__ import annotations

from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import DataError
from mtfuse.tasks.readers.base import READERS, FileReader, Row, no_rows, regular_file


def _read_parquet(path: Path, data: DataConfig) -> list[Row]:
    """Parquet rows; ``_where`` is ``path:N`` with N the 1-based row number (there are no lines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    regular_file(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file: {e}") from None
    rows = table.to_pylist()
    for number, row in enumerate(rows, start=1):
        row["_where"] = f"{path}:{number}"
    if not rows:
        raise no_rows(path)
    return rows


READERS.register("parquet")(FileReader("parquet", _read_parquet))
