"""Run the `mtfuse` CLI in this process (shared by the CLI-level tests)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from mtfuse.cli import main


def exit_code(argv: list[str]) -> int:
    """``mtfuse ARGV`` in this process; its exit code (output goes where pytest captures it)."""
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def run_cli(argv: list[object]) -> tuple[int, str, str]:
    """``mtfuse ARGV`` in this process: (exit code, stdout, stderr). Unexpected exceptions propagate."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()
