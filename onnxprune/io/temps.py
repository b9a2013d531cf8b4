"""Temp names for everything the I/O layer writes: `.onnxprune-tmp-<host>-<pid>-<random>`.

A temp is renamed into place or removed when its writer is done. One that a killed run left behind
is removed by the next writer into the same folder (`clean_stale_temps`) once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
from pathlib import Path

TEMP_TAG = ".onnxprune-tmp-"
# A temp whose pid is not running here is left alone this long: its writer may live in another pid
# namespace under the same host name (containers), where its pid means nothing.
STALE_SECONDS = 60


def host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def temp_prefix() -> str:
    return f"{TEMP_TAG}{host()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove temps this host's dead processes left in `folder` (killed mid-write); returns them."""
    own = f"{TEMP_TAG}{host()}-"
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if not entry.name.startswith(own):
                continue
            pid_text = entry.name[len(own):].split("-", 1)[0]
            try:
                old = time.time() - entry.lstat().st_mtime > STALE_SECONDS
            except OSError:
                continue
            if not pid_text.isdigit() or _alive(int(pid_text)) or not old:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
