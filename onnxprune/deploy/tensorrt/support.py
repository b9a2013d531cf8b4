"""The TensorRT ONNX parser's operator support matrix, and the restrictions we can check statically.

`operators.json` is transcribed from onnx-tensorrt `docs/operators.md`: the table for TensorRT 10.15
(opset 9-24), plus the list of operators that the TensorRT 8.5 table (opset <= 17) marked unsupported
or did not list, and the 8.5-only restrictions. The table is documentation, not the parser itself:
a "Y" means the parser has an importer, and the restriction column is what its authors wrote down.

Restrictions are checked per node against what is visible in the file: attributes, and inputs that
are initializers or `Constant` outputs. What cannot be decided without running shape inference on
the real input shapes (e.g. "input must be 4D" for a dynamic input) is left alone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.deploy.tensorrt.findings import Finding, Severity

DEFAULT_DOMAINS = ("", "ai.onnx")
# TopK: "`K` input must be less than 3840" (10.x table).
TOPK_MAX_K = 3840
RESIZE_COORD_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                "align_corners"})
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})

# ONNX element type -> the type names the matrix uses.
_ONNX_TO_TRT_TYPE: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.DOUBLE: "DOUBLE",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.FLOAT8E4M3FN: "FP8",
    onnx.TensorProto.INT4: "INT4",
    onnx.TensorProto.FLOAT4E2M1: "FP4",
}


@dataclass(frozen=True)
class OpSupport:
    op_type: str
    supported: bool
    types: tuple[str, ...]
    restrictions: str


@dataclass(frozen=True)
class SupportMatrix:
    tensorrt_version: str  # the TensorRT release the table documents
    opset_min: int
    opset_max: int
    ops: dict[str, OpSupport]
    unsupported_in_8_5: frozenset[str]
    restrictions_8_5: dict[str, str]

    def get(self, op_type: str) -> OpSupport | None:
        return self.ops.get(op_type)


@functools.lru_cache(maxsize=1)
def support_matrix() -> SupportMatrix:
    text = resources.files("onnxprune.deploy.tensorrt").joinpath("operators.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    src = raw["source"]
    ops = {name: OpSupport(name, bool(v["supported"]), tuple(v["types"]), v["restrictions"])
           for name, v in raw["operators"].items()}
    return SupportMatrix(str(src["tensorrt_version"]), int(src["opset_min"]), int(src["opset_max"]), ops,
                         frozenset(raw["unsupported_in_8_5"]), dict(raw["restrictions_8_5"]))


def trt_type_name(elem_type: int) -> str | None:
    return _ONNX_TO_TRT_TYPE.get(elem_type)


class GraphView:
    """What restriction checks need to know about a graph: constant values and tensor element types."""

    def __init__(self, graph: onnx.GraphProto, *, elem_types: dict[str, int] | None = None) -> None:
        self._tensors: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value" and a.HasField("t"):
                        self._tensors[node.output[0]] = a.t
        self.elem_types: dict[str, int] = dict(elem_types or {})
        for t in graph.initializer:
            self.elem_types.setdefault(t.name, t.data_type)

    def is_constant(self, name: str) -> bool:
        return name in self._tensors

    def constant(self, name: str) -> np.ndarray | None:
        t = self._tensors.get(name)
        if t is None:
            return None
        try:
            return numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - external data not loaded, exotic types: treat as unknown
            return None


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _input(node: onnx.NodeProto, i: int) -> str:
    """Name of input i, or "" when it is absent or omitted."""
    return node.input[i] if len(node.input) > i else ""


Checker = Callable[[onnx.NodeProto, GraphView, str | None], list[Finding]]


def _finding(node: onnx.NodeProto, check: str, message: str, severity: Severity = Severity.ERROR) -> Finding:
    return Finding(severity, check, node.name, node.op_type, message)


def _check_resize(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    out: list[Finding] = []
    mode = str(attr(node, "mode", "nearest"))
    if mode not in RESIZE_MODES:
        out.append(_finding(node, "resize-mode", f"Resize mode '{mode}' is not supported (TensorRT: nearest, linear)"))
    ctm = str(attr(node, "coordinate_transformation_mode", "half_pixel"))
    if ctm not in RESIZE_COORD_MODES:
        out.append(_finding(node, "resize-coordinate-mode",
                            f"Resize coordinate_transformation_mode '{ctm}' is not supported "
                            f"(TensorRT: {', '.join(sorted(RESIZE_COORD_MODES))})"))
    nearest = str(attr(node, "nearest_mode", "round_prefer_floor"))
    if mode == "nearest" and nearest not in RESIZE_NEAREST_MODES:
        out.append(_finding(node, "resize-nearest-mode", f"Resize nearest_mode '{nearest}' is not supported"))
    policy = str(attr(node, "keep_aspect_ratio_policy", "stretch"))
    if policy != "stretch":
        out.append(_finding(node, "resize-aspect-policy",
                            f"Resize keep_aspect_ratio_policy '{policy}' is not supported (only 'stretch')"))
    if attr(node, "antialias", 0):
        out.append(_finding(node, "resize-antialias", "Resize with antialias=1 is not supported"))
    axes = attr(node, "axes")
    if isinstance(axes, list) and _input(node, 2) and list(axes) != list(range(len(axes))):
        out.append(_finding(node, "resize-axes",
                            f"Resize with tensor `scales` needs `axes` to be 0..rank-1; got {list(axes)}"))
    return out


def _check_topk(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    out: list[Finding] = []
    if not attr(node, "sorted", 1):
        out.append(_finding(node, "topk-sorted", "TopK requires sorted=1"))
    k_name = _input(node, 1)
    k = view.constant(k_name) if k_name else None
    if k is None:
        sev = Severity.ERROR if _is_trt8(target) else Severity.WARNING
        out.append(_finding(node, "topk-k-constant",
                            "TopK `K` is not a constant: TensorRT 8.x needs an initializer, and the 3840 limit "
                            "cannot be checked", sev))
    elif k.size and int(np.max(k)) >= TOPK_MAX_K:
        out.append(_finding(node, "topk-k-limit", f"TopK K={int(np.max(k))}: TensorRT needs K < {TOPK_MAX_K}"))
    return out


def _zero_point_check(index: int, label: str) -> Checker:
    def check(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
        name = _input(node, index)
        if not name:
            return []
        zp = view.constant(name)
        if zp is None:
            return [_finding(node, "qdq-zero-point",
                             f"{node.op_type} `{label}` is not a constant; TensorRT requires it to be 0",
                             Severity.WARNING)]
        if np.any(zp.astype(np.float64) != 0):
            return [_finding(node, "qdq-zero-point",
                             f"{node.op_type} `{label}` must be 0 (symmetric quantization); "
                             f"found non-zero values")]
        return []

    return check


def _check_pool(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    out: list[Finding] = []
    kernel = attr(node, "kernel_shape")
    if isinstance(kernel, list) and len(kernel) not in (2, 3):
        out.append(_finding(node, "pool-rank", f"{node.op_type}: only 2D or 3D pooling; kernel_shape={kernel}"))
    dil = attr(node, "dilations")
    if isinstance(dil, list) and any(d != 1 for d in dil):
        out.append(_finding(node, "pool-dilations", f"{node.op_type}: dilations must be empty or all ones; got {dil}"))
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        out.append(_finding(node, "maxpool-indices", "MaxPool `Indices` output is not supported"))
    return out


def _constant_input(index: int, label: str, severity: Severity = Severity.ERROR) -> Checker:
    def check(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
        name = _input(node, index)
        if name and not view.is_constant(name):
            return [_finding(node, "constant-input",
                             f"{node.op_type} `{label}` must be a build-time constant (initializer)", severity)]
        return []

    return check


def _check_dropout(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    name = _input(node, 2)
    if not name:
        return []
    val = view.constant(name)
    if val is None:
        return [_finding(node, "dropout-training", "Dropout `is_training` must be an initializer that is False")]
    if bool(np.any(val)):
        return [_finding(node, "dropout-training", "Dropout `is_training` is True; TensorRT needs False")]
    return []


def _check_layernorm(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    if any(o for o in node.output[1:]):
        return [_finding(node, "layernorm-outputs", "LayerNormalization: only the first output `Y` is supported")]
    return []


def _check_rnn(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    out: list[Finding] = []
    if node.op_type == "LSTM":
        if attr(node, "input_forget", 0):
            out.append(_finding(node, "lstm-input-forget", "LSTM `input_forget` must be 0"))
        if attr(node, "layout", 0):
            out.append(_finding(node, "lstm-layout", "LSTM `layout` must be 0"))
    acts = attr(node, "activations")
    if attr(node, "direction", "forward") == "bidirectional" and isinstance(acts, list) and acts:
        names = [a.decode() if isinstance(a, bytes) else str(a) for a in acts]
        half = len(names) // 2
        if names[:half] != names[half:]:
            out.append(_finding(node, "rnn-activations",
                                f"bidirectional {node.op_type}: forward and reverse activations must match; "
                                f"got {names[:half]} vs {names[half:]}"))
    return out


def _check_reduce(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    name = _input(node, 1)
    if name and not view.is_constant(name):
        return [_finding(node, "reduce-axes", f"{node.op_type} `axes` must be an initializer")]
    return []


def _check_scatternd(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    red = str(attr(node, "reduction", "none"))
    if red != "none":
        return [_finding(node, "scatternd-reduction", f"ScatterND reduction '{red}' is not supported (only 'none')")]
    return []


def _check_constant(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    if bad:
        return [_finding(node, "constant-attr", f"Constant attribute {bad[0]} is not supported")]
    return []


def _check_tensor_scatter(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    axis = attr(node, "axis", -2)
    if axis != -2:
        return [_finding(node, "tensorscatter-axis", f"TensorScatter `axis` must be -2; got {axis}")]
    return []


def _check_stft(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    out: list[Finding] = []
    for idx, label in ((1, "frame_step"), (2, "window")):
        name = _input(node, idx)
        if name and not view.is_constant(name):
            out.append(_finding(node, "constant-input", f"STFT `{label}` must be an initializer"))
    return out


def _squeeze_axes(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    name = _input(node, 1)
    if name and not view.is_constant(name):
        sev = Severity.ERROR if _is_trt8(target) else Severity.WARNING
        return [_finding(node, "constant-input",
                         f"{node.op_type} `axes` is computed at run time: it must resolve to a constant "
                         "(TensorRT 8.x: must be an initializer)", sev)]
    return []


def _slice_axes(node: onnx.NodeProto, view: GraphView, target: str | None) -> list[Finding]:
    name = _input(node, 3)
    if _is_trt8(target) and name and not view.is_constant(name):
        return [_finding(node, "constant-input", "Slice `axes` must be an initializer (TensorRT 8.x)")]
    return []


_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
               "ReduceProd", "ReduceSum", "ReduceSumSquare")

CHECKERS: dict[str, Checker] = {
    "Resize": _check_resize,
    "TopK": _check_topk,
    "QuantizeLinear": _zero_point_check(2, "y_zero_point"),
    "DequantizeLinear": _zero_point_check(2, "x_zero_point"),
    "AveragePool": _check_pool,
    "MaxPool": _check_pool,
    "LpPool": _check_pool,
    "CumSum": _constant_input(1, "axis"),
    "OneHot": _constant_input(1, "depth"),
    "Dropout": _check_dropout,
    "LayerNormalization": _check_layernorm,
    "LSTM": _check_rnn,
    "GRU": _check_rnn,
    "RNN": _check_rnn,
    "ScatterND": _check_scatternd,
    "Constant": _check_constant,
    "TensorScatter": _check_tensor_scatter,
    "STFT": _check_stft,
    "Squeeze": _squeeze_axes,
    "Unsqueeze": _squeeze_axes,
    "Slice": _slice_axes,
    **dict.fromkeys(_REDUCE_OPS, _check_reduce),
}


def _is_trt8(target: str | None) -> bool:
    return target is not None and target.split(".")[0] in ("7", "8")


def check_node(node: onnx.NodeProto, view: GraphView, *, target: str | None = None,
               matrix: SupportMatrix | None = None) -> list[Finding]:
    """Findings for one node: unsupported operator, violated restriction, unlisted type.

    `target` is the TensorRT version the engine will be built with ("8.6", "10.3", ...), or None for
    the newest documented table.
    """
    m = matrix or support_matrix()
    if node.domain not in DEFAULT_DOMAINS:
        return [_finding(node, "custom-domain",
                         f"operator {node.domain}::{node.op_type} is not an ONNX operator; TensorRT needs a "
                         "plugin registered under that name")]
    op = m.get(node.op_type)
    if op is None:
        return [_finding(node, "unlisted-op", f"{node.op_type} is not in the TensorRT {m.tensorrt_version} "
                                              "operator table; expect the parser to reject it", Severity.WARNING)]
    if not op.supported:
        extra = f" ({op.restrictions})" if op.restrictions else ""
        return [_finding(node, "unsupported-op", f"{node.op_type} is not supported by the TensorRT ONNX parser{extra}")]
    out: list[Finding] = []
    if _is_trt8(target) and node.op_type in m.unsupported_in_8_5:
        out.append(_finding(node, "newer-op",
                            f"{node.op_type} is unsupported in the TensorRT 8.5 table and listed from 10.x; "
                            f"check it parses on TensorRT {target}", Severity.WARNING))
    checker = CHECKERS.get(node.op_type)
    if checker is not None:
        out.extend(checker(node, view, target))
    out.extend(_check_type(node, view, op))
    return out


def _check_type(node: onnx.NodeProto, view: GraphView, op: OpSupport) -> list[Finding]:
    if not op.types or not node.input or not node.input[0]:
        return []
    elem = view.elem_types.get(node.input[0])
    name = trt_type_name(elem) if elem is not None else None
    if name is None or name in op.types:
        return []
    if name == "DOUBLE":
        return [_finding(node, "type-double", f"{node.op_type} input is DOUBLE; TensorRT casts it down to FLOAT",
                         Severity.INFO)]
    return [_finding(node, "type", f"{node.op_type} on {name} is not in the supported types "
                                   f"({', '.join(op.types)})", Severity.WARNING)]
