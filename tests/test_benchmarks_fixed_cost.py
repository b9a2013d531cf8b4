"""benchmarks/fixed_cost.py: the fixed-cost fit, the speedup bound it implies, and its README block."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import load_script


def _module() -> ModuleType:
    return load_script("fixed_cost")


def test_fit_recovers_the_fixed_cost_of_a_line_in_pixels() -> None:
    fc = _module()
    sizes = [16, 24, 32]
    fixed, per_pixel = fc.fit_fixed_cost(sizes, [0.05 + 2e-5 * s * s for s in sizes])
    assert fixed == pytest.approx(0.05) and per_pixel == pytest.approx(2e-5)
    # A line through the origin (no fixed cost) and a negative intercept from noise both give 0.
    assert fc.fit_fixed_cost(sizes, [1e-4 * s * s for s in sizes])[0] == pytest.approx(0.0, abs=1e-12)
    assert fc.fit_fixed_cost([16, 32], [0.01, 0.2])[0] == 0.0
    with pytest.raises(ValueError):
        fc.fit_fixed_cost([16], [0.1])


def test_bound_is_one_over_macs_without_fixed_cost_and_one_when_all_is_fixed() -> None:
    fc = _module()
    assert fc.speedup_bound(1.0, 0.0, 0.5) == pytest.approx(2.0)
    assert fc.speedup_bound(1.0, 1.0, 0.5) == pytest.approx(1.0)
    assert fc.speedup_bound(1.0, 0.25, 0.5) == pytest.approx(1 / (0.25 + 0.375))
    assert fc.speedup_bound(1.0, 2.0, 0.5) == pytest.approx(1.0)  # F above T is clipped to T


def test_rows_call_a_net_unreachable_only_when_its_bound_is_below_the_target() -> None:
    fc = _module()
    # Fixed cost 0.03 ms, 1e-5 ms per pixel: at 64 T = 0.071, F is 42 % → bound 1.41× < 1.70×.
    heavy = {(s, b): b * 0.03 + b * 1e-5 * s * s for s in (16, 24, 32, 64) for b in (1, 8)}
    rows = fc.rows_for("toy", heavy, 64, 0.5)
    assert [r[1] for r in rows] == ["1", "8"]
    assert rows[0][5] == "1.41×" and rows[0][7].startswith("**below target**")
    light = {(s, b): 1e-5 * s * s for s in (16, 24, 32, 64) for b in (1, 8)}
    assert all(r[7] == "not bounded by it" and r[5] == "2.00×" for r in fc.rows_for("toy", light, 64, 0.5))
    assert fc.rows_for("toy", {(64, 1): 0.1, (16, 1): 0.01}, 64, 0.5) == []  # one fit size: no row


def test_write_block_replaces_its_own_block_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fc = _module()
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n<!-- latency:begin -->\nLATENCY\n<!-- latency:end -->\n")
    monkeypatch.setattr(fc.latency_bench, "README", readme)
    for run in (1, 2):
        fc.write_block(f"TABLE {run}", f"python benchmarks/fixed_cost.py {run}")
    text = readme.read_text()
    assert "TABLE 2" in text and "TABLE 1" not in text and "LATENCY" in text
    assert text.count("<!-- fixed-cost:begin -->") == 1 and "fixed_cost.py 2" in text
