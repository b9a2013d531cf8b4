"""Errors that the CLI turns into one clear line and a non-zero exit code."""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_NOTHING_PRUNABLE = 3
EXIT_VERIFY_FAILED = 4
EXIT_THRESHOLD = 5


class OnnxPruneError(Exception):
    """A user-facing failure: bad input, an impossible request, a failed check."""

    exit_code: int = EXIT_USAGE


class NothingToPruneError(OnnxPruneError):
    exit_code = EXIT_NOTHING_PRUNABLE


class VerifyError(OnnxPruneError):
    exit_code = EXIT_VERIFY_FAILED


class ThresholdError(OnnxPruneError):
    exit_code = EXIT_THRESHOLD
