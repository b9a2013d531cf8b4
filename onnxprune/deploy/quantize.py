"""Static INT8 quantization with explicit Q/DQ nodes, by ONNX Runtime's `quantize_static`.

onnxprune does not quantize by itself: it hands ONNX Runtime's quantizer (a well-kept one) the
calibration batches of `onnxprune.calib.source` through `FeedReader`, tells it what to leave FP32,
and checks what comes out. Weights are always per-channel symmetric INT8 (zero point 0: a zero weight
stays exactly 0, so 2:4 sparse weights stay 2:4 — checked on every weight after quantization).

Targets:
- `ort` (ONNX Runtime CPU): Conv/ConvTranspose/Gemm/MatMul with Q/DQ on their inputs and outputs,
  which ONNX Runtime fuses into QLinearConv / QLinearMatMul; activations UINT8 asymmetric (U8S8, what
  its x86 VNNI kernels run). Elementwise ops, Concat, pooling, Sigmoid stay FP32: quantizing every
  op ONNX Runtime can (its default) measured no faster on YOLOv8n and lost boxes (benchmarks/README.md).
- `tensorrt`: TensorRT's explicit-quantization placement (what NVIDIA ModelOpt does, with the same
  quantizer underneath): activations INT8 symmetric (TensorRT needs zero points of 0), Q/DQ on the
  inputs of Conv/ConvTranspose/Gemm/MatMul only, FP32 biases, no Q/DQ on layer outputs, and on a
  residual Add only on its skip input (`placement.residual_adds`), so TensorRT fuses
  Conv + bias + activation + Add into one INT8 kernel.

Left FP32: nodes matching `keep` patterns, (unless `quantize_heads`) a detector's score heads
(`placement.score_head_nodes`), and with `keep_sensitive=N` the N layers whose quantization harms
the output most, measured on the calibration samples (`deploy.sensitive`). Refused with one line: a model that is already quantized, or not
FP32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.deploy.calib_reader import FeedReader
from onnxprune.deploy.ort_quantizer import OrtQuantizer
from onnxprune.deploy.placement import keep_nodes, score_head_nodes
from onnxprune.deploy.qdq import WEIGHTED_OPS, Producers, quantized_nodes, weighted_layers
from onnxprune.deploy.sensitive import DEFAULT_SAMPLES, Sensitive, find_sensitive
from onnxprune.errors import OnnxPruneError
from onnxprune.io import runtime
from onnxprune.io.progress import ProgressFn
from onnxprune.io.types import Shapes
from onnxprune.passes.base import Pass, PassResult
from onnxprune.passes.normalize import Normalize
from onnxprune.sparsity.layout import is_nm_compliant, reduction_axis

TARGETS = ("ort", "tensorrt")
METHODS = ("minmax", "entropy", "percentile")
DEFAULT_PERCENTILE = 99.999
MIN_OPSET = 13  # per-channel DequantizeLinear (its `axis`) needs opset 13
FLOAT_TYPES: dict[int, str] = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16",
               onnx.TensorProto.DOUBLE: "float64"}


@dataclass(frozen=True)
class QuantizeOptions:
    target: str = "ort"
    method: str = "minmax"
    keep: tuple[str, ...] = ()
    quantize_heads: bool = False
    percentile: float = DEFAULT_PERCENTILE
    keep_sensitive: int = 0  # leave the N layers whose quantization harms the output most FP32 (deploy.sensitive)
    sensitive_samples: int = DEFAULT_SAMPLES  # calibration samples that harm is measured on

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise OnnxPruneError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.method not in METHODS:
            raise OnnxPruneError(f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise OnnxPruneError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.keep_sensitive < 0 or self.sensitive_samples < 1:
            raise OnnxPruneError(f"keep_sensitive must be >= 0 and sensitive_samples >= 1, got "
                                 f"{self.keep_sensitive} and {self.sensitive_samples}")


@dataclass(frozen=True)
class LayerDecision:
    node: str
    op_type: str
    int8: bool
    reason: str  # why it stayed FP32 ("" when INT8)


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    options: QuantizeOptions
    layers: list[LayerDecision]
    samples: int
    nm_weights: int = 0  # 2:4 weights before quantization (all still 2:4 after: checked)
    notes: list[str] = field(default_factory=list)
    sensitive: Sensitive | None = None  # the per-layer harm measured for keep_sensitive, and the choice

    @property
    def int8_layers(self) -> list[LayerDecision]:
        return [layer for layer in self.layers if layer.int8]

    def summary(self) -> str:
        o = self.options
        nm = f"; 2:4 kept on all {self.nm_weights} 2:4 weights" if self.nm_weights else ""
        return (f"{len(self.int8_layers)} of {len(self.layers)} weighted layers INT8 (--for {o.target}, "
                f"{o.method} calibration on {self.samples} samples){nm}")

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.options.target, "method": self.options.method, "samples": self.samples,
                "int8_layers": len(self.int8_layers), "weighted_layers": len(self.layers),
                "nm_weights_kept": self.nm_weights,
                "layers": [{"node": d.node, "op": d.op_type, "int8": d.int8, "reason": d.reason} for d in self.layers],
                "notes": list(self.notes),
                "sensitivity": None if self.sensitive is None else self.sensitive.to_dict()}


def refuse_unquantizable(model: onnx.ModelProto) -> None:
    """One-line OnnxPruneError for a model that is already quantized or not FP32."""
    done = quantized_nodes(model)
    if done:
        ops = sorted({n.op_type for n in done})
        raise OnnxPruneError(f"the model is already quantized ({len(done)} {'/'.join(ops[:3])} node(s), e.g. "
                             f"{done[0].name or done[0].op_type!r}); quantize the FP32 model it came from")
    for vi in model.graph.input:
        elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        if elem in FLOAT_TYPES:
            raise OnnxPruneError(f"input {vi.name!r} is {FLOAT_TYPES[elem]}: quantize takes an FP32 model "
                                 "(export it in float32)")
    view = Producers(model)
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in view.inits:
            elem = view.inits[node.input[1]].data_type
            if elem in FLOAT_TYPES:
                raise OnnxPruneError(f"weight {node.input[1]!r} of {node.name or node.op_type!r} is {FLOAT_TYPES[elem]}: "
                                     "quantize takes an FP32 model (export it in float32)")


def _with_min_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxPruneError(f"opset {opset} model: per-channel Q/DQ needs opset {MIN_OPSET}, and onnx's "
                             f"version converter failed ({first})") from None


def _decisions(quantized: onnx.ModelProto, excluded: dict[str, str], dense: Producers) -> list[LayerDecision]:
    out = []
    for node, layer in weighted_layers(quantized):
        if layer.int8:
            out.append(LayerDecision(node.name, node.op_type, True, ""))
            continue
        if node.name in excluded:
            reason = excluded[node.name]
        elif node.input[1] not in dense.inits:
            reason = "left FP32: its weight is computed, not a constant"
        else:
            reason = "left FP32 by ONNX Runtime's quantizer"
        out.append(LayerDecision(node.name, node.op_type, False, reason))
    return out


def check_nm_kept(dense: onnx.ModelProto, quantized: onnx.ModelProto, *, n: int = 2, m: int = 4) -> int:
    """Raise if a weight that was N:M before quantization is not N:M as stored INT8; returns how many were N:M.

    Symmetric quantization maps 0 to 0, so a violation means a quantizer bug or an asymmetric weight."""
    before = Producers(dense)
    dense_nodes = {nd.name: nd for nd in dense.graph.node}
    count = 0
    for node, layer in weighted_layers(quantized):
        src = dense_nodes.get(node.name)
        if layer.weight is None or src is None or len(src.input) < 2:
            continue
        w = before.constant(src.input[1])
        if w is None or w.dtype.kind != "f" or w.shape != layer.weight.values.shape:
            continue
        axis = reduction_axis(node, w.ndim)
        if axis is None or not is_nm_compliant(w, axis, n, m):
            continue
        count += 1
        if np.any(layer.weight.values[w == 0]) or not is_nm_compliant(layer.weight.values, axis, n, m):
            raise OnnxPruneError(f"internal check failed: the weight of {node.name!r} was {n}:{m} and is not after "
                                 "quantization (please report this)")
    return count


def quantize(model: onnx.ModelProto, *, calibration: CalibrationLike = None,
             options: QuantizeOptions | None = None,
             shapes: Shapes | None = None,
             progress: ProgressFn | None = None) -> QuantizeResult:
    """A Q/DQ INT8 copy of `model`; the input model is never modified.

    calibration: a CalibrationSource, a CalibConfig or path (None: random inputs, with a
    CalibrationWarning), a callable returning fresh feed iterators, or ready feeds
    (`onnxprune.calib.source.CalibrationSource.of`).
    shapes: concrete shapes of dynamic inputs, for random calibration inputs only.
    """
    opts = options or QuantizeOptions()
    refuse_unquantizable(model)
    work = Normalize()(_with_min_opset(model)).model
    runtime.session(work)  # a model ONNX Runtime cannot load gets its one-line error here
    source = CalibrationSource.of(calibration, work, shapes=shapes)
    reader = FeedReader(source)
    first = reader.get_next()
    reader.rewind()
    shapes = {k: tuple(int(d) for d in v.shape) for k, v in (first or {}).items()}
    excluded = keep_nodes(work, opts.keep)
    notes: list[str] = []
    if not opts.quantize_heads:
        try:
            heads = score_head_nodes(work, shapes=shapes)
        except OnnxPruneError as exc:
            heads = {}
            notes.append(f"score heads not searched: {exc}")
        excluded.update({k: v for k, v in heads.items() if k not in excluded})
        if heads:
            notes.append(f"{len(heads)} score-head node(s) kept FP32 (--quantize-heads to quantize them)")
    held = source.first(opts.sensitive_samples, cut=True) if opts.keep_sensitive else []
    sensitive: Sensitive | None = None
    with OrtQuantizer(work, reader, target=opts.target, method=opts.method, percentile=opts.percentile) as quantizer:
        built = quantizer.build(excluded)
        if held:
            candidates = [layer.node for _, layer in weighted_layers(built.model) if layer.int8]
            sensitive = find_sensitive(lambda fp32: quantizer.build(set(excluded) | fp32).model, work, held, candidates,
                                       n=opts.keep_sensitive, optimize=opts.target == "ort", progress=progress)
            scan = sensitive.scan
            excluded.update({layer.node: f"kept FP32: quantization-sensitive, #{scan.rank(layer.node)} of "
                             f"{len(scan.layers)} (output error {scan.base:.4g} all INT8, {layer.error:.4g} with it "
                             "alone FP32; --keep-sensitive)" for layer in sensitive.taken})
            if sensitive.taken:
                built = quantizer.build(excluded)
            notes.append(f"--keep-sensitive {opts.keep_sensitive}: {len(sensitive.taken)} layer(s) kept FP32; output "
                         f"error ({scan.samples} calibration samples, channel_error) {scan.base:.4g} all INT8 -> "
                         f"{sensitive.error:.4g}")
    if built.rewired:
        notes.append(f"{built.rewired} residual Add(s): Q/DQ on the skip input only, so TensorRT fuses the Add into "
                     "the Conv")
    quantized = built.model
    nm = check_nm_kept(work, quantized)
    layers = _decisions(quantized, excluded, Producers(work))
    return QuantizeResult(quantized, opts, layers, reader.samples, nm, notes, sensitive)


class QuantizePass(Pass):
    """`quantize` as an onnxprune Pass (PassManager, the onnx-ir and Olive adapters, plugins)."""

    name = "quantize"

    def __init__(self, *, calibration: CalibrationLike = None, target: str = "ort", method: str = "minmax",
                 keep: Sequence[str] = (), quantize_heads: bool = False,
                 percentile: float = DEFAULT_PERCENTILE, keep_sensitive: int = 0) -> None:
        self.calibration = calibration
        self.options = QuantizeOptions(target=target, method=method, keep=tuple(keep),
                                       quantize_heads=quantize_heads, percentile=percentile,
                                       keep_sensitive=keep_sensitive)

    def call(self, model: onnx.ModelProto) -> PassResult:
        result = quantize(model, calibration=self.calibration, options=self.options)
        return PassResult(result.model, True, [result.summary(), *result.notes])
