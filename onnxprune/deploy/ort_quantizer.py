"""ONNX Runtime's `quantize_static`, calibrated once, run for any set of layers left FP32.

Calibration (every calibration sample through the model with every tensor as an output) is the slow
part. `OrtQuantizer` does it once, keeps the ranges in its temp folder, and `build(excluded)` hands
them to `quantize_static` as its calibration cache, so a search over which layers stay FP32
(`deploy.sensitive`) costs one graph rewrite per candidate, not one calibration.

Placement per target (`quantize.py` documents the two): `ort` quantizes Conv/ConvTranspose/Gemm/MatMul
with UINT8 activations; `tensorrt` INT8 symmetric on layer inputs and residual skip inputs only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import onnx

from onnxprune.deploy.calib_reader import FeedReader
from onnxprune.deploy.calibrate import tensor_ranges
from onnxprune.deploy.placement import residual_adds, unquantize_inputs
from onnxprune.deploy.qdq import WEIGHTED_OPS
from onnxprune.errors import OnnxPruneError


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer prints progress to stdout and advice to the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def ort_arguments(model: onnx.ModelProto, target: str, method: str, excluded: set[str]) -> dict[str, Any]:
    """`quantize_static` keyword arguments for a target, every node in `excluded` left FP32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    extra: dict[str, Any] = {"WeightSymmetric": True}
    args: dict[str, Any] = {
        "quant_format": QuantFormat.QDQ, "per_channel": True, "weight_type": QuantType.QInt8,
        "calibrate_method": {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                             "percentile": CalibrationMethod.Percentile}[method],
        "extra_options": extra}
    if target == "ort":
        args["activation_type"] = QuantType.QUInt8
        args["op_types_to_quantize"] = sorted(WEIGHTED_OPS)
        args["nodes_to_exclude"] = sorted(excluded)
        extra["ActivationSymmetric"] = False
        return args
    adds = {r.node for r in residual_adds(model)}
    args["activation_type"] = QuantType.QInt8
    args["nodes_to_quantize"] = [n.name for n in model.graph.node
                                 if (n.op_type in WEIGHTED_OPS or n.name in adds) and n.name not in excluded]
    extra.update({"ActivationSymmetric": True, "QuantizeBias": False,
                  "OpTypesToExcludeOutputQuantization": sorted({n.op_type for n in model.graph.node}),
                  "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
                  "QDQDisableWeightAdjustForInt32Bias": True})
    return args


def _one_line(exc: Exception) -> OnnxPruneError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OnnxPruneError(f"ONNX Runtime's quantizer failed: {type(exc).__name__}: {first[:300]}")


@dataclass(frozen=True)
class Built:
    model: onnx.ModelProto
    rewired: int  # residual Adds whose main input lost its Q/DQ (tensorrt)


class OrtQuantizer:
    """`with OrtQuantizer(model, reader, target=..., method=..., percentile=...) as q: q.build(excluded)`.

    `model` must be normalised (named nodes); the ranges come from every batch of `reader`."""

    def __init__(self, model: onnx.ModelProto, reader: FeedReader, *, target: str, method: str,
                 percentile: float) -> None:
        self.model, self.reader = model, reader
        self.target, self.method, self.percentile = target, method, percentile
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._cache: Path | None = None

    def __enter__(self) -> OrtQuantizer:
        self._tmp = tempfile.TemporaryDirectory(prefix="onnxprune-quant-")
        folder = Path(self._tmp.name)
        onnx.save_model(self.model, str(folder / "model.onnx"))
        try:
            with quiet():
                self._cache = tensor_ranges(folder / "model.onnx", self.reader, method=self.method,
                                            percentile=self.percentile, folder=folder,
                                            symmetric=self.target == "tensorrt" and self.method == "percentile")
        except OnnxPruneError:
            self._tmp.cleanup()
            raise
        except Exception as exc:  # noqa: BLE001 - the calibrator raises many types; the user gets one line
            self._tmp.cleanup()
            raise _one_line(exc) from None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def build(self, excluded: Iterable[str] = ()) -> Built:
        """The Q/DQ model with every node in `excluded` left FP32 (same ranges every time)."""
        from onnxruntime.quantization import quantize_static

        if self._tmp is None or self._cache is None:
            raise RuntimeError("OrtQuantizer.build outside its `with` block")
        skip = set(excluded)
        args = ort_arguments(self.model, self.target, self.method, skip)
        if "nodes_to_quantize" in args and not args["nodes_to_quantize"]:
            raise OnnxPruneError("nothing to quantize: no Conv/Gemm/MatMul layer is left after --keep and the "
                                 "score heads")
        folder = Path(self._tmp.name)
        dst = folder / "model.int8.onnx"
        try:
            with quiet():
                quantize_static(str(folder / "model.onnx"), str(dst), None, calibration_cache_path=str(self._cache),
                                **args)
        except OnnxPruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many types; the user gets one line
            raise _one_line(exc) from None
        quantized = onnx.load(str(dst))
        rewired = 0
        if self.target == "tensorrt":
            rewired = unquantize_inputs(quantized, {r.node: r.main for r in residual_adds(self.model)
                                                    if r.node not in skip})
        return Built(quantized, rewired)
