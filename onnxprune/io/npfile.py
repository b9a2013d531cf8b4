"""Reading user .npy/.npz files: any failure, a corrupt archive member included, is one line."""

from __future__ import annotations

import contextlib
import zipfile
import zlib
from collections.abc import Iterator

from onnxprune.errors import OnnxPruneError

# What numpy and zipfile raise on a truncated, corrupt or foreign file (a bad zip member only
# fails when it is read, so keep the member reads inside the block too).
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """`what` names the flag and path, e.g. `--calib data.npz`."""
    try:
        yield
    except READ_ERRORS as exc:
        raise OnnxPruneError(f"{what}: not a readable .npy/.npz file ({type(exc).__name__}: {exc})") from None
