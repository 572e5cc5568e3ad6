"""The command line being run, as the user could type it again: recorded in ``results.json`` and model cards.

``mtfuse.cli.main`` sets it for the duration of a command (``mtfuse`` and its arguments, whether run as the
console script, ``python -m mtfuse.cli`` or in-process); a library call outside the CLI gets the process's own
``sys.argv``.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

_ARGV: ContextVar[tuple[str, ...] | None] = ContextVar("mtfuse_argv", default=None)


@contextlib.contextmanager
def running(argv: Sequence[str]) -> Iterator[None]:
    """Record ``mtfuse ARGV`` as the command while the block runs."""
    token = _ARGV.set(("mtfuse", *map(str, argv)))
    try:
        yield
    finally:
        _ARGV.reset(token)


def command_line() -> str:
    """The command, shell-quoted (``shlex.join``)."""
    argv = _ARGV.get()
    return shlex.join(argv if argv is not None else sys.argv)
