"""onnxsim 0.8.1's structured pruners on the digits model, side by side.

`onnxsim.pruning.apply_structured_pruning(model, sparsity=s)` and
`apply_structured_wanda_pruning(model, calibration_data=..., sparsity=s)` at a few sparsities;
MACs kept from onnxprune.measure.model_stats, test accuracy from ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import onnx
from _acc_common import DIGITS_SHAPES, Digits, acc_cell, accuracy
from _acc_digits import CALIB_BATCH, CALIB_SAMPLES

from onnxprune.measure.model_stats import model_stats

SPARSITIES = (0.25, 0.5, 0.75)


def pruners(d: Digits) -> dict[str, Callable[[onnx.ModelProto, float], onnx.ModelProto]] | None:
    try:
        from onnxsim import pruning
    except ImportError:
        return None
    calib = [{"input": d.calib[i:i + CALIB_BATCH]} for i in range(0, CALIB_SAMPLES, CALIB_BATCH)]

    def wanda(m: onnx.ModelProto, s: float) -> Any:
        return pruning.apply_structured_wanda_pruning(m, calibration_data=calib, sparsity=s)

    def magnitude(m: onnx.ModelProto, s: float) -> Any:
        return pruning.apply_structured_pruning(m, sparsity=s)

    return {"apply_structured_pruning": magnitude, "apply_structured_wanda_pruning": wanda}


def onnxsim_cell(d: Digits, fn: Callable[[onnx.ModelProto, float], onnx.ModelProto], s: float,
                 dense_macs: int) -> str:
    try:
        model = fn(d.model, s)
        kept = model_stats(model, shapes=DIGITS_SHAPES).macs / dense_macs
        return acc_cell(accuracy(model, d.x, d.y), kept)
    except Exception as exc:  # noqa: BLE001 - report whatever the peer raises
        return f"n/a (error: {type(exc).__name__})"


def onnxsim_rows(d: Digits, sparsities: Sequence[float] = SPARSITIES) -> tuple[list[str], list[list[str]]]:
    """(header, rows); a cell is `accuracy @MACs kept` at onnxsim's `sparsity=s`."""
    head = ["onnxsim 0.8.1", *(f"sparsity={s}" for s in sparsities)]
    fns = pruners(d)
    if fns is None:
        return head, [["onnxsim not installed", *(["n/a"] * len(sparsities))]]
    dense_macs = model_stats(d.model, shapes=DIGITS_SHAPES).macs
    rows: list[list[str]] = []
    for name, fn in fns.items():
        rows.append([f"`{name}`", *(onnxsim_cell(d, fn, s, dense_macs) for s in sparsities)])
        print("  " + " | ".join(rows[-1]), flush=True)
    return head, rows
