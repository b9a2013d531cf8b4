"""Shared pieces of benchmarks/accuracy.py: paths, data, ONNX Runtime accuracy, table cells, README block."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from _readme import replace_block

from onnxprune.io.runtime import run, session

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits"
REAL = ROOT / "models" / "real"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- accuracy:begin -->", "<!-- accuracy:end -->"
BENCH_EXTRA = "n/a (pip install 'onnxprune[bench]')"
DIGITS_SHAPES = {"input": (1, 1, 8, 8)}


@dataclass(frozen=True)
class Digits:
    model: onnx.ModelProto
    x: np.ndarray
    y: np.ndarray
    calib: np.ndarray
    calib_path: Path


def load_digits() -> Digits:
    test = np.load(DIGITS / "test.npz")
    calib = np.load(DIGITS / "calib.npz")["input"]
    return Digits(onnx.load(str(DIGITS / "digits_resnet.onnx")), test["x"], test["y"], calib,
                  DIGITS / "calib.npz")


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, *, optimize: bool = False) -> float:
    """Top-1 test accuracy in ONNX Runtime (CPU; `optimize`: graph optimisation on, e.g. to run a Q/DQ
    model in ORT's INT8 kernels rather than as written)."""
    name = model.graph.input[0].name
    logits = next(iter(run(session(model, optimize=optimize), {name: x}).values()))
    return float((logits.argmax(1) == y).mean())


def outputs(model: onnx.ModelProto, inputs: Sequence[np.ndarray], *, optimize: bool = False) -> list[np.ndarray]:
    """The first output of the model for each single-sample input (one session for all)."""
    sess = session(model, optimize=optimize)
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: x})[0] for x in inputs]


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def acc_cell(acc: float | None, kept: float | None, note: str = "") -> str:
    """`97.2 % @0.74` (accuracy at MACs kept), or `n/a` with a footnote-sized reason."""
    if acc is None or kept is None:
        return f"n/a ({note})" if note else "n/a"
    return f"{100 * acc:.1f} % @{kept:.2f}"


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def environment() -> str:
    load = ", load average at the end {:.1f} / {:.1f} / {:.1f} (shared machine)".format(*os.getloadavg())
    return (f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count() or 0} CPUs{load}, "
            f"Python {platform.python_version()}")


def commit() -> str:
    """The short hash of the checked-out commit (what a measurement ran), or "unknown"."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def write_block(text: str, command: str) -> None:
    """Replace (or append) the accuracy block of benchmarks/README.md; other blocks are left alone."""
    replace_block(README, BEGIN, END, f"{environment()}, with\n\n    {command}\n\n{text}",
                  "Accuracy after pruning (`benchmarks/accuracy.py`)")


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """numpy's BLAS limited to n threads (None: one per CPU), when threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n or os.cpu_count() or 1, user_api="blas"):
        yield
