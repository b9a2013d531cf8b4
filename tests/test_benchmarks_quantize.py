"""Smoke test of benchmarks/quantize.py: the `--quick` digits rows (no latency, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quantize_benchmark_quick() -> None:
    readme = ROOT / "benchmarks" / "README.md"
    before = readme.read_text()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quantize.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split(" | ")[1]: line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| digits")}
    assert set(rows) >= {"dense FP32", "dense INT8", "pruned 0.5× MACs + INT8", "2:4 + INT8"}
    for label in ("dense INT8", "pruned 0.5× MACs + INT8", "2:4 + INT8"):
        assert float(rows[label][3].split(" %")[0]) >= 98.5, rows[label]  # the targets
        assert float(rows[label][4].split(" %")[0]) >= 98.5, rows[label]
    assert readme.read_text() == before
