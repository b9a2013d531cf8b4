"""Python warnings on the command line: one `warning: ...` line each on stderr, once."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import click

from onnxprune.calib.batching import CalibrationWarning


@contextlib.contextmanager
def echo_warnings() -> Iterator[None]:
    """Record the warnings raised inside the block and print each distinct one when it ends.

    They are printed after the recording has stopped: printing from inside it would record the
    printed warning again, without end.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalibrationWarning)
            yield
    finally:
        shown: set[str] = set()
        for w in caught:
            text = str(w.message) if issubclass(w.category, CalibrationWarning) \
                else f"{w.category.__name__}: {w.message}"
            if text not in shown:
                shown.add(text)
                click.echo(f"warning: {text}", err=True)
