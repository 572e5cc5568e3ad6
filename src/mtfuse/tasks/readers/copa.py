"""Format ``copa``: the Choice Of Plausible Alternatives XML (``copa-dev.xml``, ``copa-test.xml``; 500 items each),
in ``data.path`` (or its ``datasets/`` or ``COPA-resources/datasets/`` folder), or named by ``data.files``.

Each ``<item asks-for="cause|effect" most-plausible-alternative="1|2">`` with ``<p>``, ``<a1>``, ``<a2>`` becomes
``{"context", "choices", "label", "premise", "question", "id"}``: ``context`` is the premise followed by the
question, as in SuperGLUE practice ("What was the CAUSE of this?" / "What happened as a RESULT?"),
``choices`` the two alternatives and ``label`` the right one's index (0 or 1). Default fields: text
``[context, choices]``, label ``label`` (task type ``multiple_choice``).

COPA has no train split. Train on the dev file by naming it in ``data.files`` (``train: copa-dev.xml``) and
carve a seeded dev split out of it with ``data.dev_from_train`` (as ``configs/copa.yaml`` does); test stays
the official test file. Parsed with the standard library (``xml.etree``: the DTD is not loaded).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.tasks.readers.base import READERS, Reader, Row, no_rows, read_text, split_file, split_files

QUESTIONS = {"cause": "What was the CAUSE of this?", "effect": "What happened as a RESULT?"}
_FOLDERS = ("", "datasets/", "COPA-resources/datasets/")


def _read_copa(path: Path, encoding: str = "utf-8") -> list[Row]:
    text = read_text(path, encoding)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        line, col = e.position
        raise DataError(f"{where(path, line)}: not well-formed XML (column {col + 1})") from None
    # ElementTree keeps no line numbers: the n-th <item> tag of the text is the n-th item element
    lines = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(r"<item\b", text)]
    items = list(root.iter("item"))
    rows: list[Row] = []
    for n, item in enumerate(items):
        loc = where(path, lines[n] if len(lines) == len(items) else None)
        question = item.get("asks-for")
        if question not in QUESTIONS:
            raise DataError(f"{loc}: asks-for is {question!r}; expected 'cause' or 'effect'")
        parts = {}
        for tag in ("p", "a1", "a2"):
            el = item.find(tag)
            value = " ".join((el.text or "").split()) if el is not None else ""
            if not value:
                what = "premise" if tag == "p" else f"alternative {tag[1]}"
                raise DataError(f"{loc}: item {item.get('id', '?')} has no {what} (<{tag}>)")
            parts[tag] = value
        answer = item.get("most-plausible-alternative")
        if answer not in ("1", "2"):
            raise DataError(f"{loc}: most-plausible-alternative is {answer!r}; expected 1 or 2")
        rows.append(
            {
                "id": item.get("id"),
                "premise": parts["p"],
                "question": question,
                "context": f"{parts['p']} {QUESTIONS[question]}",
                "choices": [parts["a1"], parts["a2"]],
                "label": int(answer) - 1,
                "_where": loc,
            }
        )
    if not rows:
        raise no_rows(path)
    return rows


class CopaReader(Reader):
    format = "copa"

    def _files(self, data: DataConfig) -> dict[str, Path]:
        names = {s: tuple(f"{d}copa-{s}.xml" for d in _FOLDERS) for s in ("dev", "test")}
        files = split_files(data, names)
        if not files:
            raise ConfigError(
                "format 'copa' needs data.path (a folder with copa-dev.xml / copa-test.xml) or data.files"
            )
        return files

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return ["context", "choices"], "label"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        path = split_file(self._files(data), split, "format 'copa' (data.files / data.path)", data)
        return _read_copa(path, data.encoding)


READERS.register("copa")(CopaReader())
