"""Running the command line in-process, and the shape of a user-facing error."""

from __future__ import annotations

from click.testing import CliRunner

from onnxprune.cli import main


def invoke(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `onnxprune ARGS`."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line_error(stderr: str) -> str:
    """The single `error: ...` line a failing command prints (no traceback, no internal error)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return lines[0]
