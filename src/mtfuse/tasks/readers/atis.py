"""Format ``atis``: the joint intent + slot layout of ATIS and SNIPS as circulated by SlotGated-SLU (Goo et al.
2018): in ``data.path``, one folder per split (``train``, ``valid`` or ``dev``, ``test``; ``data.splits`` may
rename them, e.g. ``{dev: valid}``), each with three files aligned line by line: ``seq.in`` (space-separated
words), ``seq.out`` (one IOB slot tag per word) and ``label`` (the intent; ``a#b`` for several).

Rows are ``{"tokens": [...], "label": {"intent": ..., "slots": [...]}}`` (task type ``intent_slots``); ``_where``
is the ``seq.in`` line. Files of different lengths, a blank line, or a ``seq.out`` line with a different number
of tags than its ``seq.in`` line has words are errors naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.tasks.readers.base import BOM, READERS, SPLITS, Reader, Row, no_rows, read_text, split_lines

FILES = ("seq.in", "seq.out", "label")
_FOLDERS = {"train": ("train",), "dev": ("valid", "dev"), "test": ("test",)}


def _lines(path: Path, encoding: str) -> list[str]:
    lines = split_lines(read_text(path, encoding))
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.lstrip(BOM) for line in lines]


def read_atis_split(folder: Path, encoding: str = "utf-8") -> list[Row]:
    """The rows of one split folder (``seq.in``, ``seq.out``, ``label``)."""
    paths = {name: folder / name for name in FILES}
    text = {name: _lines(p, encoding) for name, p in paths.items()}
    n = len(text["seq.in"])
    for name in FILES[1:]:
        if len(text[name]) != n:
            raise DataError(
                f"{paths[name]}: {len(text[name])} lines, but {paths['seq.in']} has {n}; the three files of "
                f"a split are aligned line by line (one utterance a line in each)"
            )
    rows: list[Row] = []
    for i in range(n):
        words, tags, intent = text["seq.in"][i].split(), text["seq.out"][i].split(), text["label"][i].strip()
        for name, value in (("seq.in", words), ("seq.out", tags), ("label", intent)):
            if not value:
                raise DataError(
                    f"{where(paths[name], i + 1)}: blank line (one utterance a line in each file)"
                )
        if len(tags) != len(words):
            raise DataError(
                f"{where(paths['seq.out'], i + 1)}: {len(tags)} slot tags, but line {i + 1} of "
                f"{paths['seq.in']} has {len(words)} words (one tag per word)"
            )
        rows.append(
            {
                "tokens": words,
                "label": {"intent": intent, "slots": tags},
                "_where": where(paths["seq.in"], i + 1),
            }
        )
    if not rows:
        raise no_rows(paths["seq.in"])
    return rows


class AtisReader(Reader):
    format = "atis"

    def _folders(self, data: DataConfig) -> dict[str, Path]:
        if data.path is None:
            raise ConfigError("format 'atis' needs data.path (a folder with train/, valid/, test/)")
        root = Path(data.path)
        if not root.is_dir():
            raise DataError(f"data directory not found: {root}")
        unknown = [k for k in data.splits if k not in SPLITS]
        if unknown:
            raise ConfigError(f"data.splits key '{unknown[0]}' is not a split; use {', '.join(SPLITS)}")
        out: dict[str, Path] = {}
        for split in SPLITS:
            names = (data.splits[split],) if split in data.splits else _FOLDERS[split]
            found = [root / n for n in names if (root / n / "seq.in").exists()]
            if found:
                out[split] = found[0]
        if not out:
            raise DataError(
                f"no split folders with seq.in / seq.out / label in {root} (train/, valid/, test/)"
            )
        return out

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._folders(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return ["tokens"], "label"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        folders = self._folders(data)
        if split not in folders:
            raise DataError(f"split '{split}' not found in {data.path}; available: {list(folders)}")
        return read_atis_split(folders[split], data.encoding)


READERS.register("atis")(AtisReader())
