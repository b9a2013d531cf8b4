"""Make tensorrt-stubs usable by mypy: copy them out of site-packages and fix their syntax.

tensorrt-stubs 10.13 installs `tensorrt/__init__.pyi` without a py.typed marker (so mypy skips it)
and its `tensorrt_bindings/tensorrt.pyi` has parameters named `in` and a required parameter after
optional ones. This copies both packages into a stub folder, fixes those lines, and prints the
folder to put on MYPYPATH:

    MYPYPATH=$(python tools/trt_stubs.py .venv/trt-stubs) mypy onnxprune/tensorrt
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
from pathlib import Path


def main() -> None:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv/trt-stubs").resolve()
    site = Path(sysconfig.get_paths()["purelib"])
    for pkg in ("tensorrt", "tensorrt_bindings"):
        src = site / pkg
        if not (src / "__init__.pyi").exists():
            sys.exit(f"trt_stubs: error: {src}/__init__.pyi missing; install tensorrt-stubs (make venv)")
        shutil.rmtree(dest / pkg, ignore_errors=True)
        shutil.copytree(src, dest / pkg, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    stub = dest / "tensorrt_bindings" / "tensorrt.pyi"
    text = stub.read_text()
    text = re.sub(r"\bin: list\[", "in_: list[", text)
    text = text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)")
    stub.write_text(text)
    print(dest)


if __name__ == "__main__":
    main()
