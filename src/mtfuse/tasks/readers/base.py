"""What every data reader shares: the :data:`READERS` registry (one reader instance per ``data.format``),
the :class:`Reader` base class, :class:`FileReader` (one file per split, used by csv / tsv / jsonl / parquet),
and the helpers the format modules use: only regular files are opened, text is decoded strictly (default
UTF-8) with a leading byte-order mark dropped, split files are found from ``data.files`` / ``data.path``.

Also here, because they need the task's label field and so are applied by :mod:`mtfuse.tasks.prepare`
rather than by a reader: label ids -> names (``data.label_map``: :func:`label_map`, :func:`apply_label_map`)
and a dev split carved out of train (``data.dev_from_train``: :func:`carve_dev`).
"""

from __future__ import annotations

import codecs
import json
import stat
import zlib
from collections.abc import Callable
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


def regular_file(path: Path) -> Path:
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


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file, strictly decoded (default UTF-8), without a leading UTF-8 byte-order mark."""
    regular_file(path)
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


def is_blank(line: str) -> bool:
    """Nothing but white space (and byte-order marks, as where files were concatenated)."""
    return not line.replace(BOM, "").strip()


def split_lines(text: str) -> list[str]:
    """Every line, line endings removed. Splits on "\\n" only: str.splitlines() also breaks on \\x0b,
    \\x1c, \\u2028..., which may occur inside text."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def nonblank_lines(path: Path, encoding: str = "utf-8") -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line, line endings removed."""
    lines = split_lines(read_text(path, encoding))
    return [(number, line) for number, line in enumerate(lines, start=1) if not is_blank(line)]


def resolve_file(data: DataConfig, file: str) -> Path:
    """A ``data.files`` entry: relative paths are relative to ``data.path`` when that is set."""
    p = Path(file).expanduser()
    if not p.is_absolute() and data.path:
        p = Path(data.path) / p
    return p


def split_files(data: DataConfig, defaults: dict[str, tuple[str, ...]]) -> dict[str, Path]:
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
        found[split] = resolve_file(data, file)
    return {s: found[s] for s in SPLITS if s in found}


def split_file(files: dict[str, Any], split: str, what: str, data: DataConfig | None = None) -> Any:
    if split not in files:
        hint = ""
        if data is not None and data.files:
            hint = " (data.files lists every split; default file names are not looked for when it is given)"
        raise DataError(f"split '{split}' not found for {what}; available: {list(files)}{hint}")
    return files[split]


def no_rows(path: object) -> DataError:
    return DataError(f"{path}: no rows (the split is empty)")


# ---------------------------------------------------------------------------------- one file per split


class FileReader(Reader):
    """One file per split: ``data.files`` (split -> path, relative to ``data.path`` when set), or
    ``train.EXT`` / ``dev.EXT`` / ``test.EXT`` found in ``data.path``. Rows keep the file's column names."""

    def __init__(self, format: str, parse: Callable[[Path, DataConfig], list[Row]]) -> None:
        self.format = format
        self.parse = parse

    def _files(self, data: DataConfig) -> dict[str, Path]:
        ext = self.format
        files = split_files(data, {s: (f"{s}.{ext}",) for s in SPLITS})
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
        return self.parse(split_file(self._files(data), split, what, data), data)


# ------------------------------------------------------------------ label ids -> names, dev from train


def _label_map_file(path: Path, data: DataConfig) -> dict[str, str]:
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(read_text(path, data.encoding))
        except json.JSONDecodeError as e:
            raise DataError(f"{where(path, e.lineno)}: invalid JSON: {e.msg}") from None
        if isinstance(obj, list):
            obj = {str(data.label_map_start + i): v for i, v in enumerate(obj)}
        if not isinstance(obj, dict) or not all(isinstance(v, (str, int)) for v in obj.values()):
            raise DataError(f"{path}: a JSON label map is an object {{id: name}} or a list of names")
        return {str(k): str(v) for k, v in obj.items()}
    lines = [(n, line.strip()) for n, line in nonblank_lines(path, data.encoding)]
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
    return _label_map_file(resolve_file(data, data.label_map), data)


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


def carve_dev(
    rows: list[Row], fraction: float, seed: int, stratify: str | None, source: str, group: str | None = None
) -> list[int]:
    """Indices (sorted) of the train rows that become the dev split: ``round(fraction * n)`` of them (at
    least 1, at most n - 1), seeded; with ``stratify``, every value of that field keeps its share (largest
    remainders get the rounding), so rare classes reach dev when they can. With ``group``, whole groups of
    rows (one value of that field) are carved instead: ``round(fraction * groups)`` of them."""
    if group is not None:
        keys = list(dict.fromkeys(str(row.get(group)) for row in rows))  # in file order
        if len(keys) < 2:
            raise DataError(
                f"{source}: train has one '{group}' group; too few to carve a dev split out of it"
            )
        chosen = {keys[j] for j in carve_dev([{} for _ in keys], fraction, seed, None, source)}
        return [i for i, row in enumerate(rows) if str(row.get(group)) in chosen]
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
