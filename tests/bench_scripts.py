"""Load a script of benchmarks/ as a module, for tests of its pure parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_script(stem: str) -> ModuleType:
    """benchmarks/<stem>.py as module `bench_<stem>` (loaded once per session)."""
    name = f"bench_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_quick(stem: str, *args: str, timeout: int = 300) -> str:
    """The stdout of `python benchmarks/<stem>.py ARGS`, which must succeed and leave README.md alone."""
    import subprocess

    readme = ROOT / "benchmarks" / "README.md"
    before = readme.read_text()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{stem}.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert readme.read_text() == before
    return proc.stdout
