"""benchmarks/latency.py: a speed-only run rewrites its tables and keeps the budget table it did not re-run."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_scripts import load_script

OLD = """# Benchmarks

<!-- latency:begin -->
Measured 2026-01-01 on x86_64, 2 CPUs, Python 3.11.7, with

    .venv/bin/python benchmarks/latency.py

### Speedup at 0.5× MACs

OLD SPEED TABLE

### Budgets: target vs achieved

BUDGET TABLE

Notes (this run): about the old run.
<!-- latency:end -->

## Accuracy

untouched
"""


def test_speed_part_keeps_the_budget_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lat = load_script("latency")
    readme = tmp_path / "README.md"
    readme.write_text(OLD)
    monkeypatch.setattr(lat, "README", readme)
    for run in (1, 2):  # a second speed-only run must not re-label the kept section
        lat.write_block([f"### Speedup at 0.5× MACs\n\nNEW SPEED TABLE {run}"], f"python latency.py --part speed {run}")
    text = readme.read_text()
    assert "NEW SPEED TABLE 2" in text and "OLD SPEED TABLE" not in text and "NEW SPEED TABLE 1" not in text
    assert "BUDGET TABLE" in text and "about the old run" not in text
    assert text.count("Kept from the previous run") == 1
    assert "Kept from the previous run (2026-01-01 on x86_64, 2 CPUs, Python 3.11.7: " \
           "`.venv/bin/python benchmarks/latency.py`)" in text
    assert "--part speed 2" in text and text.endswith("## Accuracy\n\nuntouched\n")
