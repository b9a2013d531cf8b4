"""Smoke test of benchmarks/quantize.py: the `--quick` digits rows (no latency, nothing written)."""

from __future__ import annotations

from bench_scripts import run_quick


def test_quantize_benchmark_quick() -> None:
    out = run_quick("quantize", "--quick")
    rows = {line.split(" | ")[1]: line.split(" | ") for line in out.splitlines() if line.startswith("| digits")}
    assert set(rows) >= {"dense FP32", "dense INT8", "pruned 0.5× MACs + INT8", "2:4 + INT8"}
    for label in ("dense INT8", "pruned 0.5× MACs + INT8", "2:4 + INT8"):
        assert float(rows[label][3].split(" %")[0]) >= 98.5, rows[label]  # the targets
        assert float(rows[label][4].split(" %")[0]) >= 98.5, rows[label]
