"""Ctrl-C (SIGINT) and SIGTERM during training: finish the current step, write a checkpoint, stop cleanly."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from mtfuse.errors import MtfuseError


class Interrupted(MtfuseError):
    """Training stopped by a signal after writing a checkpoint; the CLI exits 130."""

    exit_code = 130


class StopFlag:
    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """While inside, SIGINT / SIGTERM only set the flag (the loop checks it after each step); a second
    signal interrupts at once. Outside the main thread (no signal handlers there) the flag stays unset."""
    flag = StopFlag()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if flag:  # second signal: the user insists
            raise KeyboardInterrupt
        flag.signal = signum

    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
