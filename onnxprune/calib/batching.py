"""Validate calibration chunks against the model inputs and cut them into batches."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import InputSpec
from onnxprune.io.types import Feed


class CalibrationWarning(UserWarning):
    """Calibration is weaker than it could be (random inputs, dropped samples)."""


def _fmt(dims: Sequence[object]) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else "?" for d in dims) + ")"


def conform(arr: np.ndarray, spec: InputSpec, origin: str) -> np.ndarray:
    """Give `arr` a leading sample axis, check the static dims and cast to the input dtype."""
    rank = len(spec.dims)
    if arr.ndim == rank - 1:
        arr = arr[None]
    elif arr.ndim != rank:
        raise OnnxPruneError(f"{origin}: input {spec.name!r} has rank {arr.ndim}, the model expects {rank} "
                             f"(or {rank - 1} for a single sample) with shape {_fmt(spec.dims)}")
    for got, want in zip(arr.shape[1:], spec.dims[1:], strict=True):
        if isinstance(want, int) and got != want:
            raise OnnxPruneError(f"{origin}: input {spec.name!r} samples have shape {tuple(arr.shape[1:])}, "
                                 f"the model expects {_fmt(spec.dims[1:])}")
    if arr.dtype != spec.dtype:
        if arr.dtype.kind not in "fiub" or (spec.dtype.kind in "iub") != (arr.dtype.kind in "iub"):
            raise OnnxPruneError(f"{origin}: input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")
        arr = arr.astype(spec.dtype)
    return np.asarray(arr)


def _require_finite(arrays: dict[str, np.ndarray], n: int, *, first: int, origin: str) -> None:
    """NaN or inf in calibration data would become NaN weights in every re-fit: refuse it at the source."""
    for name, a in arrays.items():
        if a.dtype.kind not in "fc" or n == 0:
            continue
        ok = np.isfinite(a[:n]).reshape(n, -1).all(axis=1)
        if not ok.all():
            raise OnnxPruneError(f"{origin}: sample {first + int(np.argmin(ok))} of input {name!r} holds NaN or "
                                 f"inf; calibration data must be finite")


def batch_size_for(specs: Sequence[InputSpec], requested: int) -> int:
    """A static leading dim wins over the requested batch size."""
    static = {s.dims[0] for s in specs if s.dims and isinstance(s.dims[0], int)}
    if len(static) > 1:
        raise OnnxPruneError(f"model inputs have different static batch sizes {sorted(static)}")  # type: ignore[type-var]
    if static:
        return int(static.pop())  # type: ignore[arg-type]
    if requested < 1:
        raise OnnxPruneError(f"--calib-batch must be at least 1 (got {requested})")
    return requested


def rebatch(chunks: Iterable[dict[str, np.ndarray]], specs: Sequence[InputSpec], *, batch: int,
            limit: int | None, origin: str) -> Iterator[Feed]:
    """Yield feeds of exactly `batch` samples (the last may be smaller unless the batch dim is static)."""
    size = batch_size_for(specs, batch)
    static_batch = any(s.dims and isinstance(s.dims[0], int) for s in specs)
    buf: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    held = total = 0
    for chunk in chunks:
        arrays = {s.name: conform(chunk[s.name], s, origin) for s in specs}
        counts = {n: a.shape[0] for n, a in arrays.items()}
        if len(set(counts.values())) != 1:
            raise OnnxPruneError(f"{origin}: inputs have different sample counts {counts}")
        n = next(iter(counts.values()))
        if limit is not None:
            n = min(n, limit - total)
        _require_finite(arrays, n, first=total, origin=origin)
        start = 0
        while start < n:
            take = min(n - start, size - held)
            for name, a in arrays.items():
                buf[name].append(a[start:start + take])
            held += take
            start += take
            if held == size:
                yield {k: np.ascontiguousarray(np.concatenate(v)) for k, v in buf.items()}
                buf = {s.name: [] for s in specs}
                held = 0
        total += n
        if limit is not None and total >= limit:
            break
    if total == 0:
        raise OnnxPruneError(f"{origin}: no calibration samples")
    if static_batch and total < size:
        raise OnnxPruneError(f"{origin}: {total} samples, fewer than the model's fixed batch size {size}")
    if held and static_batch:
        warnings.warn(f"{origin}: dropped the last {held} samples: the model's batch dim is fixed at {size}",
                      CalibrationWarning, stacklevel=2)
    elif held:
        yield {k: np.ascontiguousarray(np.concatenate(v)) for k, v in buf.items()}
