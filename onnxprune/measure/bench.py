"""ONNX Runtime benchmarks: latency (median / p90), interleaved A/B speed ratio, peak memory.

Latency runs with ORT graph optimisation ON (as deployed), on the CPU provider, with random
inputs from `onnxprune.io.inputs.random_inputs`. Times are wall-clock `time.perf_counter` around
`InferenceSession.run`, after `warmup` untimed runs.

A/B runs interleave the two models (A, B, A, B, ...) and report the median of the per-pair ratios
t_A / t_B, so slow drifts of the machine (thermal, other load) hit both sides of each pair alike.

Peak memory is measured in a fresh subprocess per model: it imports ONNX Runtime and loads the
input feed, resets the kernel's peak-RSS mark (Linux: `5 > /proc/self/clear_refs`) and reads the
current RSS, then creates the session, runs it and reads the peak (`VmHWM`). The growth is what
the session (weights, arena, kernels, activations) needs. Where the reset is unavailable (macOS)
it falls back to `resource.getrusage().ru_maxrss` before/after, a lifetime peak that can hide
the growth of small models. tracemalloc cannot see ORT's native allocations, hence the subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.io import runtime
from onnxprune.io.external import on_disk
from onnxprune.io.inputs import feed_shapes, graph_inputs, random_inputs
from onnxprune.io.model_io import is_large, load_model
from onnxprune.io.types import Feed, Shapes
from onnxprune.measure.model_stats import serialized_size

ModelLike = onnx.ModelProto | str | os.PathLike[str]

DEFAULT_WARMUP = 10
DEFAULT_REPEAT = 50


@dataclass(frozen=True)
class LatencyOptions:
    """How latency is measured (see onnxprune.measure.bench.latency)."""

    batch: int = 1
    threads: int = 0
    warmup: int = 5
    repeat: int = 30
    max_steps: int = 8
    # The user's samples to time (`batch` rows; CalibrationSource.timing_feed); None: random inputs.
    feed: Feed | None = field(default=None, compare=False, repr=False)


MEMORY_RUNS = 3
MEMORY_METHOD = (f"fresh subprocess per model; peak RSS while creating the session and running it {MEMORY_RUNS} "
                 "times, minus RSS before (after importing ONNX Runtime and loading the inputs)")
METHODS = {
    "vmhwm": MEMORY_METHOD + "; Linux VmHWM reset through /proc/self/clear_refs",
    "ru_maxrss": MEMORY_METHOD + "; getrusage ru_maxrss (a lifetime peak: small models may show 0)",
}


@dataclass(frozen=True)
class Latency:
    """Summary of timed runs, in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    repeat: int

    @classmethod
    def from_seconds(cls, times: Sequence[float]) -> Latency:
        ms = np.asarray(times, dtype=np.float64) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), float(np.mean(ms)), float(np.min(ms)),
                   len(ms))

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "mean_ms": self.mean_ms,
                "min_ms": self.min_ms, "repeat": self.repeat}


@dataclass(frozen=True)
class BenchResult:
    batch: int
    threads: int                        # 0 = ONNX Runtime default
    warmup: int
    input_shapes: Shapes
    latency: Latency

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "threads": self.threads, "warmup": self.warmup,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                **self.latency.to_dict()}


@dataclass(frozen=True)
class ABResult:
    """Interleaved A/B latency. speedup > 1 means B is faster than A."""

    batch: int
    threads: int
    warmup: int
    repeat: int
    a: Latency
    b: Latency
    speedup: float                      # median over pairs of t_A / t_B
    speedup_p10: float
    speedup_p90: float
    input_shapes: Shapes = field(default_factory=dict)  # of model A

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "threads": self.threads, "warmup": self.warmup, "repeat": self.repeat,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "a": self.a.to_dict(), "b": self.b.to_dict(), "speedup": self.speedup,
                "speedup_p10": self.speedup_p10, "speedup_p90": self.speedup_p90}


@dataclass(frozen=True)
class MemoryResult:
    baseline_bytes: int                 # peak RSS before creating the session
    peak_bytes: int                     # peak RSS after creating and running it
    method: str = MEMORY_METHOD

    @property
    def growth_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_bytes": self.baseline_bytes, "peak_bytes": self.peak_bytes,
                "growth_bytes": self.growth_bytes, "method": self.method}


# --------------------------------------------------------------------------------------- inputs


def _spec_model(model: ModelLike) -> onnx.ModelProto:
    """The model's graph (weights not needed) for input signatures."""
    return model if isinstance(model, onnx.ModelProto) else load_model(model, load_external_data=False)


def _ort_source(model: ModelLike) -> onnx.ModelProto | str:
    return model if isinstance(model, onnx.ModelProto) else os.fspath(model)


def bench_feed(model: onnx.ModelProto, *, batch: int, shapes: Shapes | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of `batch` rows; refuses a batch the model's static dims cannot take.

    `batch` also sets dim 0 of a `shapes` entry when the model's dim 0 is dynamic."""
    if batch < 1:
        raise OnnxPruneError(f"--batch must be at least 1 (got {batch})")
    fixed = dict(shapes or {})
    for spec in graph_inputs(model):
        dynamic0 = bool(spec.dims) and not isinstance(spec.dims[0], int)
        if spec.name in fixed:
            if dynamic0 and fixed[spec.name]:
                fixed[spec.name] = (batch, *fixed[spec.name][1:])
            continue
        if spec.dims and isinstance(spec.dims[0], int) and spec.dims[0] != batch:
            raise OnnxPruneError(f"input {spec.name} has a static batch of {spec.dims[0]}; cannot run batch {batch} "
                                 f"(use --batch {spec.dims[0]})")
    return random_inputs(model, shapes=fixed, batch=batch, seed=seed)


def same_inputs(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """Whether one feed fits both models (same input names and dtypes)."""
    return [(s.name, s.dtype) for s in graph_inputs(a)] == [(s.name, s.dtype) for s in graph_inputs(b)]


def _check_counts(warmup: int, repeat: int, threads: int) -> None:
    if warmup < 0:
        raise OnnxPruneError(f"--warmup must be >= 0 (got {warmup})")
    if repeat < 1:
        raise OnnxPruneError(f"--repeat must be >= 1 (got {repeat})")
    if threads < 0:
        raise OnnxPruneError(f"--threads must be >= 0 (got {threads})")


def _timed(sess: Any, feed: Feed) -> float:
    t0 = time.perf_counter()
    sess.run(None, feed)
    return time.perf_counter() - t0


# -------------------------------------------------------------------------------------- latency


def latency(model: ModelLike, *, batch: int = 1, threads: int = 0, warmup: int = DEFAULT_WARMUP,
            repeat: int = DEFAULT_REPEAT, shapes: Shapes | None = None, feed: Feed | None = None) -> BenchResult:
    """Latency of one model: `warmup` untimed runs, then `repeat` timed runs, on `feed` (the user's
    data) or random inputs."""
    _check_counts(warmup, repeat, threads)
    feed = feed if feed is not None else bench_feed(_spec_model(model), batch=batch, shapes=shapes)
    sess = runtime.session(_ort_source(model), optimize=True, threads=threads)
    runtime.run(sess, feed)  # first run with error handling
    for _ in range(warmup):
        sess.run(None, feed)
    times = [_timed(sess, feed) for _ in range(repeat)]
    return BenchResult(batch, threads, warmup, feed_shapes(feed), Latency.from_seconds(times))


def interleaved_latency(model_a: ModelLike, model_b: ModelLike, *, batch: int = 1, threads: int = 0,
                        warmup: int = DEFAULT_WARMUP, repeat: int = DEFAULT_REPEAT,
                        shapes: Shapes | None = None, feed: Feed | None = None) -> ABResult:
    """A/B latency with runs interleaved A, B, A, B, ...; speedup = median of per-pair t_A / t_B.
    `feed`: the user's data for model A (and B when its inputs are the same), else random inputs."""
    _check_counts(warmup, repeat, threads)
    spec_a, spec_b = _spec_model(model_a), _spec_model(model_b)
    feed_a = feed if feed is not None else bench_feed(spec_a, batch=batch, shapes=shapes)
    feed_b = feed_a if same_inputs(spec_a, spec_b) else bench_feed(spec_b, batch=batch, shapes=shapes)
    sess_a = runtime.session(_ort_source(model_a), optimize=True, threads=threads)
    sess_b = runtime.session(_ort_source(model_b), optimize=True, threads=threads)
    runtime.run(sess_a, feed_a)
    try:
        runtime.run(sess_b, feed_b)
    except OnnxPruneError:
        if feed_b is not feed_a:
            raise
        feed_b = bench_feed(spec_b, batch=batch, shapes=shapes)  # e.g. pruned input shapes differ
        runtime.run(sess_b, feed_b)
    for _ in range(warmup):
        sess_a.run(None, feed_a)
        sess_b.run(None, feed_b)
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(_timed(sess_a, feed_a))
        tb.append(_timed(sess_b, feed_b))
    ratios = np.asarray(ta) / np.maximum(np.asarray(tb), 1e-12)
    return ABResult(batch, threads, warmup, repeat, Latency.from_seconds(ta), Latency.from_seconds(tb),
                    float(np.median(ratios)), float(np.percentile(ratios, 10)), float(np.percentile(ratios, 90)),
                    feed_shapes(feed_a))


# --------------------------------------------------------------------------------------- memory


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_linux_peak() -> bool:
    """Reset VmHWM (Linux >= 4.0: write 5 to /proc/self/clear_refs) so the peak starts from now."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return _proc_status_bytes("VmHWM") is not None and _proc_status_bytes("VmRSS") is not None


def _memory_probe_main() -> None:
    """Child process: `python -c '...' MODEL FEED.npz THREADS` prints a JSON line."""
    path, feed_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with np.load(feed_path, allow_pickle=False) as npz:
        feed = {k: npz[k] for k in npz.files}
    import onnxruntime  # noqa: F401 - imported before the baseline on purpose

    if _reset_linux_peak():
        method, baseline = "vmhwm", _proc_status_bytes("VmRSS") or 0
    else:
        method, baseline = "ru_maxrss", _maxrss_bytes()
    sess = runtime.session(path, optimize=True, threads=threads)
    for _ in range(MEMORY_RUNS):
        runtime.run(sess, feed)
    peak = (_proc_status_bytes("VmHWM") or 0) if method == "vmhwm" else _maxrss_bytes()
    print(json.dumps({"baseline": baseline, "peak": peak, "method": method}))


def peak_memory(model: ModelLike, *, batch: int = 1, threads: int = 0, shapes: Shapes | None = None,
                timeout: float | None = 1800.0, feed: Feed | None = None) -> MemoryResult:
    """Peak RSS growth of creating and running an ORT session, measured in a fresh subprocess."""
    feed = feed if feed is not None else bench_feed(_spec_model(model), batch=batch, shapes=shapes)
    with tempfile.TemporaryDirectory(prefix="onnxprune-mem-") as tmp, contextlib.ExitStack() as stack:
        feed_path = os.path.join(tmp, "feed.npz")
        np.savez(feed_path, **feed)  # type: ignore[arg-type]
        # A ModelProto goes to the child as a file whose weights stay where they are (external.on_disk).
        path = str(stack.enter_context(on_disk(model, spill=is_large(model)))) if isinstance(model, onnx.ModelProto) else os.fspath(model)
        code = "from onnxprune.measure.bench import _memory_probe_main; _memory_probe_main()"
        try:
            proc = subprocess.run([sys.executable, "-c", code, path, feed_path, str(threads)],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise OnnxPruneError(f"memory probe timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise OnnxPruneError(f"memory probe failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")
    try:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise OnnxPruneError("memory probe printed no result") from None
    return MemoryResult(int(got["baseline"]), int(got["peak"]), METHODS.get(got.get("method", ""), MEMORY_METHOD))


def model_file_size(model: ModelLike) -> int:
    """Bytes on disk (model file plus external data) for a path; serialised size for a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return serialized_size(model)
    p = Path(model)
    proto = load_model(p, load_external_data=False)
    extra = set()
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                extra.add(p.parent / e.value)
    return p.stat().st_size + sum(f.stat().st_size for f in extra if f.is_file())
