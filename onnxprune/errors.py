"""Errors that the CLI turns into one clear line and a non-zero exit code."""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_NOTHING_PRUNABLE = 3
EXIT_VERIFY_FAILED = 4
EXIT_THRESHOLD = 5
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: onnxprune itself went wrong, not the input


class OnnxPruneError(Exception):
    """A user-facing failure: bad input, an impossible request, a failed check."""

    exit_code: int = EXIT_USAGE


class NothingToPruneError(OnnxPruneError):
    exit_code = EXIT_NOTHING_PRUNABLE


class VerifyError(OnnxPruneError):
    exit_code = EXIT_VERIFY_FAILED


class ThresholdError(OnnxPruneError):
    exit_code = EXIT_THRESHOLD


class InternalError(OnnxPruneError):
    """onnxprune broke one of its own invariants (e.g. the pruned model fails the checker): a bug to
    report, never the user's input."""

    exit_code = EXIT_INTERNAL

    def __str__(self) -> str:
        return f"internal error (an onnxprune bug, please report it; nothing was written): {super().__str__()}"
