"""Engine build options shared by `engine.py` (TensorRT Python API) and `trtexec.py` (command line),
and the per-version decisions that do not need TensorRT installed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import check_shapes, parse_dims

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """Optimization-profile shapes of one dynamic input."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise OnnxPruneError(f"shape range {self}: min/opt/max must have the same rank")
        if any(not (a <= b <= c) for a, b, c in zip(self.min, self.opt, self.max, strict=True)):
            raise OnnxPruneError(f"shape range {_dims(self.min)}/{_dims(self.opt)}/{_dims(self.max)}: "
                                 "need min <= opt <= max in every dimension")


def _dims(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def parse_shape_range(item: str) -> tuple[str, ShapeRange]:
    """`name:1x3x224x224/4x3x224x224/8x3x224x224`, or `name:1x3x224x224` for a fixed shape."""
    name, sep, spec = item.rpartition(":")
    if not sep or not name or not spec:
        raise OnnxPruneError(f"--shapes {item!r}: expected NAME:MIN/OPT/MAX, e.g. input:1x3x224x224/8x3x224x224/16x3x224x224")
    parts = spec.split("/")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise OnnxPruneError(f"--shapes {item!r}: give one shape or three (min/opt/max)")
    shapes = [parse_dims(p, item) for p in parts]
    return name, ShapeRange(shapes[0], shapes[1], shapes[2])


def parse_shape_ranges(items: tuple[str, ...] | list[str]) -> dict[str, ShapeRange]:
    out: dict[str, ShapeRange] = {}
    for item in items:
        name, rng = parse_shape_range(item)
        out[name] = rng
    return out


def check_shape_ranges(model: onnx.ModelProto, ranges: Mapping[str, ShapeRange]) -> None:
    """Profile inputs must exist and min/opt/max must each fit the input (`inputs.check_shapes`)."""
    for pick in ("min", "opt", "max"):
        check_shapes(model, {name: getattr(r, pick) for name, r in ranges.items()})


@dataclass(frozen=True)
class BuildOptions:
    sparse: bool = False
    force_sparsity: bool = False  # trtexec --sparsity=force (prunes weights itself: for speed estimates only)
    fp16: bool = False
    int8: bool = False
    shapes: Mapping[str, ShapeRange] = field(default_factory=dict)
    workspace_mib: int | None = None
    timing_cache: str | None = None
    dla_core: int | None = None
    gpu_fallback: bool = False
    strongly_typed: bool = False


_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.\d+)*(?:\.?(?:post|dev|rc|a|b)\d*)?(?:\+\S*)?")


def parse_version(version: str, *, what: str = "TensorRT version") -> tuple[int, int]:
    """`8.6`, `10`, `10.3.0.26`, `8.6.1.post1` -> (major, minor); `what` names the flag in the error."""
    match = _VERSION.fullmatch(version.strip())
    if match is None:
        raise OnnxPruneError(f"{what} {version!r}: expected X.Y, e.g. 8.6 or 10.3")
    return int(match[1]), int(match[2] or 0)


@dataclass(frozen=True)
class ModelPrecision:
    has_fp16: bool  # any FLOAT16 initializer or tensor type
    has_qdq: bool  # QuantizeLinear/DequantizeLinear nodes (explicit quantization)


def model_precision(model: onnx.ModelProto) -> ModelPrecision:
    half = onnx.TensorProto.FLOAT16
    fp16 = any(t.data_type == half for t in model.graph.initializer) or any(
        vi.type.tensor_type.elem_type == half for vi in [*model.graph.input, *model.graph.output])
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    return ModelPrecision(fp16, qdq)


@dataclass(frozen=True)
class BuildPlan:
    """What to ask of a given TensorRT version. Names are attributes of the tensorrt enums."""

    version: tuple[int, int]
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members
    strongly_typed: bool
    notes: tuple[str, ...] = ()


AUTOCAST_HINT = ("convert the model first, e.g. `python -m modelopt.onnx.autocast --onnx_path MODEL.onnx "
                 "--output_path MODEL_fp16.onnx`, and build that")


def plan_build(version: tuple[int, int], options: BuildOptions, precision: ModelPrecision) -> BuildPlan:
    """Decide network/builder flags for a TensorRT version.

    - 8.x: explicit batch must be requested (EXPLICIT_BATCH); precision via FP16/INT8 builder flags.
    - 10.x: explicit batch is the only mode (the flag is deprecated and ignored, so it is not set);
      FP16/INT8 flags still exist ("weak typing", deprecated from 10.12); STRONGLY_TYPED on request.
    - 11.x: networks are always strongly typed and BuilderFlag.FP16/INT8 are gone: the precision
      comes from the model. --fp16 therefore requires a model that already holds FP16 tensors, and
      --int8 a model with Q/DQ nodes; we do not convert the model ourselves.
    INT8 is explicit quantization only (Q/DQ in the model) on every version: there is no calibrator here.
    """
    major, _minor = version
    if major < 8 or (major == 8 and version[1] < 6):
        raise OnnxPruneError(f"TensorRT {major}.{version[1]} is too old; onnxprune supports 8.6, 10.x and 11.x")
    if options.int8 and not precision.has_qdq:
        raise OnnxPruneError("--int8 needs an explicitly quantized model (QuantizeLinear/DequantizeLinear nodes); "
                             "make one with `onnxprune quantize --for tensorrt`")
    if options.dla_core is not None and not (options.fp16 or options.int8 or precision.has_fp16):
        raise OnnxPruneError("DLA runs FP16 or INT8 only: add --fp16 or --int8")
    net: list[str] = []
    flags: list[str] = []
    notes: list[str] = []
    strongly = options.strongly_typed or major >= 11
    if major == 8:
        net.append("EXPLICIT_BATCH")
    if strongly:
        net.append("STRONGLY_TYPED")
    if major >= 11 or strongly:
        if options.fp16 and not precision.has_fp16:
            raise OnnxPruneError(f"TensorRT {major}.x builds strongly typed networks and has no FP16 builder flag; "
                                 f"the precision comes from the model: {AUTOCAST_HINT}")
        if options.fp16 or options.int8:
            notes.append("strongly typed: precision taken from the model's tensor types and Q/DQ nodes")
    else:
        if options.fp16:
            flags.append("FP16")
        if options.int8:
            flags.append("INT8")
    if options.sparse or options.force_sparsity:
        flags.append("SPARSE_WEIGHTS")
    if options.dla_core is not None and options.gpu_fallback:
        flags.append("GPU_FALLBACK")
    if options.dla_core is not None and options.sparse:
        notes.append("DLA: sparse weights are used only where the DLA supports them; check the layer report")
    return BuildPlan(version, tuple(net), tuple(flags), strongly, tuple(notes))
