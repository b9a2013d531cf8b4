"""Shared fixtures."""

from __future__ import annotations

import os

import pytest

from onnxprune.planning.cpu_profile import CPU_ENV, PROFILES

# The suite runs under one forced CPU profile when ONNXPRUNE_CPU is set (`ONNXPRUNE_CPU=avx2 make test`),
# else under a CPU without NCHWc kernels: never under this machine's /proc/cpuinfo.
SUITE_PROFILE = os.environ.get(CPU_ENV) or "none"


@pytest.fixture(autouse=True)
def forced_cpu(monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI's default `--round-to auto` follows the CPU profile: every test sees SUITE_PROFILE
    unless it asks for `cpu_profile` (each profile in turn) or forces another one itself."""
    monkeypatch.setenv(CPU_ENV, SUITE_PROFILE)
    return SUITE_PROFILE


@pytest.fixture(params=list(PROFILES))
def cpu_profile(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test whose result depends on the CPU profile under each one (avx512, avx2, none)."""
    monkeypatch.setenv(CPU_ENV, request.param)
    return str(request.param)
