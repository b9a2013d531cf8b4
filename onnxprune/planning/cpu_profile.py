"""The CPU onnxprune runs on, as ONNX Runtime's CPU kernels see it: the NCHWc block.

ONNX Runtime's CPU graph optimiser (NchwcTransformer, on at the default optimisation level) moves a
Conv to MLAS's blocked NCHWc kernels only when its channel counts fit the block:

- group == 1: input channels below the block or a multiple of it (output channels are padded up);
- grouped and depthwise convs: output channels (and channels per group) a multiple of the block.

Any other Conv stays in NCHW with reorder nodes around it, and a pruned model can end up slower than
the dense one (benchmarks/README.md). The block is MLAS's `MlasNchwcGetBlockSize()`: 16 on a CPU with
AVX-512F, 8 with AVX2 and FMA, and no NCHWc kernels otherwise (block 1: nothing to round to).

Keeping fewer channels than the block in a group == 1 layer is allowed by the rule above but buys no
latency (the output is padded back up to the block), so the rounding is one multiple for every group.

`round_to="auto"` (planning/rounding.py) means this block on the CPU that runs onnxprune; prune for
another CPU with an explicit `--round-to N`, or set `ONNXPRUNE_CPU=avx512|avx2|none` to make "auto"
mean that CPU's block (tests run the profile-dependent cases under each). Forcing changes what
onnxprune rounds to, not the block ONNX Runtime uses on this machine.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from onnxprune.errors import OnnxPruneError

CPUINFO = Path("/proc/cpuinfo")
AVX512_BLOCK = 16
AVX2_BLOCK = 8
CPU_ENV = "ONNXPRUNE_CPU"
# The CPU profiles ONNXPRUNE_CPU can force, by the flags that decide MLAS's NCHWc block.
PROFILES: dict[str, tuple[str, ...]] = {"avx512": ("avx512f",), "avx2": ("avx2", "fma"), "none": ()}


@dataclass(frozen=True)
class OrtCpuProfile:
    """The NCHWc block of the CPU, and where that came from."""

    block: int  # MlasNchwcGetBlockSize(): 16, 8, or 1 (no NCHWc kernels)
    isa: str  # "avx512f", "avx2+fma" or "none"
    source: str  # "/proc/cpuinfo", "given flags", "forced by ONNXPRUNE_CPU=…" or "unknown (no /proc/cpuinfo)"

    @property
    def round_to(self) -> int:
        return self.block

    def describe(self) -> str:
        origin = self.source if self.source.startswith("forced") else f"from {self.source}"
        if self.block == 1:
            return f"ONNX Runtime CPU: no NCHWc kernels ({self.isa}, {origin}): exact channel counts"
        return f"ONNX Runtime CPU: NCHWc block {self.block} ({self.isa}, {origin})"


def _cpu_field(keys: tuple[str, ...], cpuinfo: Path | None) -> str | None:
    """The value of the first line of /proc/cpuinfo (the first CPU) whose key is one of `keys`;
    "" when no line has it, None where there is no such file."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return ""


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str] | None:
    """The flags of the first CPU listed in /proc/cpuinfo, or None where there is no such file."""
    value = _cpu_field(("flags", "Features"), cpuinfo)
    return None if value is None else frozenset(value.split())


def cpu_name(cpuinfo: Path | None = None) -> str:
    """The first CPU's model name from /proc/cpuinfo (x86 "model name", ARM "Processor"/"Hardware"),
    else the platform's processor string."""
    return _cpu_field(("model name", "Processor", "Hardware"), cpuinfo) or platform.processor() or "unknown CPU"


def nchwc_block(flags: Iterable[str]) -> tuple[int, str]:
    """(block, isa) of MLAS's NCHWc kernels for a CPU with these flags."""
    have = {f.lower() for f in flags}
    if "avx512f" in have:
        return AVX512_BLOCK, "avx512f"
    if {"avx2", "fma"} <= have:
        return AVX2_BLOCK, "avx2+fma"
    return 1, "none"


def forced_profile() -> OrtCpuProfile | None:
    """The profile ONNXPRUNE_CPU forces (avx512, avx2 or none), or None where it is not set."""
    value = os.environ.get(CPU_ENV, "").strip().lower()
    if not value:
        return None
    if value not in PROFILES:
        raise OnnxPruneError(f"{CPU_ENV}={value!r}: choose one of {', '.join(PROFILES)} (or unset it)")
    return OrtCpuProfile(*nchwc_block(PROFILES[value]), source=f"forced by {CPU_ENV}={value}")


def ort_cpu_profile(*, flags: Iterable[str] | None = None, cpuinfo: Path | None = None) -> OrtCpuProfile:
    """The profile of a CPU with `flags`; else of the CPU `cpuinfo` describes; else the one
    ONNXPRUNE_CPU forces; else this machine's (/proc/cpuinfo)."""
    if flags is not None:
        return OrtCpuProfile(*nchwc_block(flags), source="given flags")
    forced = forced_profile() if cpuinfo is None else None
    if forced is not None:
        return forced
    path = cpuinfo or CPUINFO
    found = cpu_flags(path)
    if found is None:
        return OrtCpuProfile(1, "none", f"unknown (no {path})")
    return OrtCpuProfile(*nchwc_block(found), source=str(path))
