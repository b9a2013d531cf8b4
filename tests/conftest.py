"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxprune import runtime_profile


@pytest.fixture(autouse=True)
def cpu_without_nchwc(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI's default `--round-to auto` reads the CPU's flags: every test sees a CPU without AVX2
    (no NCHWc block, exact channel counts) unless it injects other flags (tests/test_runtime_profile.py)."""
    path = tmp_path_factory.mktemp("cpu") / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 sse4_1 sse4_2\n")
    monkeypatch.setattr(runtime_profile, "CPUINFO", path)
    return path
