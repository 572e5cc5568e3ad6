"""One exception type for everything the user can fix: the CLI prints its message and exits non-zero."""

from __future__ import annotations


class MtfuseError(Exception):
    """A problem with the user's input (file, field, config key, run directory...).

    The message must name the file, line or field at fault; the CLI prints it without a traceback.
    """


class ConfigError(MtfuseError):
    """An invalid configuration value or key."""


class DataError(MtfuseError):
    """Malformed or inconsistent data."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format a location like ``data/train.tsv:12 (field 'label')`` for error messages."""
    loc = str(path)
    if line is not None:
        loc += f":{line}"
    if field is not None:
        loc += f" (field '{field}')"
    return loc
