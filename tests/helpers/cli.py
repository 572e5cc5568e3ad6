"""Run the `mtfuse` CLI in this process (shared by the CLI-level tests)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

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


def fails(argv: list[object], *expected: str) -> str:
    """Run ARGV, expect the one-line user error (exit 2) containing every ``expected`` text; return stderr."""
    code, out, err = run_cli(argv)
    assert code == 2, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "error:" in err and "Traceback" not in err and "Traceback" not in out
    flat = " ".join(err.split())  # the console may wrap long lines
    for text in expected:
        assert " ".join(str(text).split()) in flat, f"{text!r} not in stderr:\n{err}"
    return err


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
