"""Format ``dailydialog``: the DailyDialog release (Li et al. 2017), one dialogue a line with its utterances
separated by ``__eou__``, read as context -> response pairs: every utterance after the first is the response
to the ``data.context_turns`` turns before it (default 1; 0 = the whole dialogue so far), the turns of the
context joined by ``data.turn_separator``.

Files: ``data.path`` holding ``train/dialogues_train.txt``, ``validation/dialogues_validation.txt`` (dev) and
``test/dialogues_test.txt`` as released, or ``data.files``. Rows are ``{"context", "response", "dialogue",
"turn"}``; ``_where`` is the dialogue's line.
"""

from __future__ import annotations

from pathlib import Path

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError, where
from mtfuse.tasks.readers.base import READERS, Reader, Row, no_rows, nonblank_lines, split_file, split_files

EOU = "__eou__"
_DEFAULTS = {
    "train": ("train/dialogues_train.txt", "dialogues_train.txt"),
    "dev": ("validation/dialogues_validation.txt", "dialogues_validation.txt"),
    "test": ("test/dialogues_test.txt", "dialogues_test.txt"),
}


def turns_of(line: str) -> list[str]:
    """A dialogue's utterances: split on __eou__, stripped, the empty piece after the last one dropped."""
    parts = [p.strip() for p in line.split(EOU)]
    if parts and not parts[-1]:
        parts.pop()
    return parts


def dialogue_pairs(path: Path, context_turns: int, separator: str, encoding: str = "utf-8") -> list[Row]:
    rows = []
    for number, line in nonblank_lines(path, encoding):
        turns = turns_of(line)
        empty = [j for j, t in enumerate(turns) if not t]
        if empty:
            raise DataError(f"{where(path, number)}: utterance {empty[0] + 1} of the dialogue is empty")
        for j in range(1, len(turns)):
            ctx = turns[:j] if context_turns == 0 else turns[max(0, j - context_turns) : j]
            rows.append(
                {
                    "context": separator.join(ctx),
                    "response": turns[j],
                    "dialogue": number,
                    "turn": j,
                    "_where": f"{path}:{number}",
                }
            )
    if not rows:
        raise no_rows(path)
    return rows


class DailyDialogReader(Reader):
    format = "dailydialog"

    def _files(self, data: DataConfig) -> dict[str, Path]:
        files = split_files(data, _DEFAULTS)
        if not files:
            raise ConfigError(
                "format 'dailydialog' needs data.path (the release folder: train/dialogues_train.txt, ...) "
                "or data.files"
            )
        return files

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._files(data))

    def defaults(self, data: DataConfig) -> tuple[list[str] | None, str | None]:
        return ["context"], "response"

    def read(self, data: DataConfig, split: str) -> list[Row]:
        path = split_file(self._files(data), split, "format 'dailydialog'", data)
        return dialogue_pairs(path, data.context_turns, data.turn_separator, data.encoding)


READERS.register("dailydialog")(DailyDialogReader())
