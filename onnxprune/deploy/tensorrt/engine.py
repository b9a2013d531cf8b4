"""Build a TensorRT engine from an ONNX file with the TensorRT Python API (8.6, 10.x, 11.x).

Version differences handled here (see `options.plan_build` for the flag decisions):
- 8.6: `create_network(1 << EXPLICIT_BATCH)`; 10.x/11.x: `create_network(0)` (explicit batch only).
- workspace: `config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, n)` (8.4+); the old
  `config.max_workspace_size` (removed in 10) is only used when the pool API is missing.
- `builder.build_serialized_network` everywhere (`build_engine` was removed in 10).
- 11.x: always strongly typed; `BuilderFlag.FP16/INT8` do not exist, so builder flags are looked up
  by name with getattr and a missing one is an error, not an AttributeError.
- Parser errors: `ParserError.node_name()` exists from 10.x; on 8.6 the node index is mapped to the
  ONNX node's name ourselves.

Per-layer sparsity comes from two places: the engine inspector (`ProfilingVerbosity.DETAILED`,
`LayerInformationFormat.JSON`: the chosen tactic's name contains "sparse" for sparse kernels) and the
builder's "(Sparsity)" log lines ("Layers eligible for sparse math", "picked sparse implementation").

`import tensorrt` happens inside functions only. Running an engine (dense twin timing, ORT-vs-TRT
comparison) needs a GPU and polygraphy; building needs a GPU too, so none of this runs on CPU-only CI.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxprune.deploy.tensorrt.build_options import (
    BuildOptions,
    BuildPlan,
    ShapeRange,
    check_shape_ranges,
    model_precision,
    parse_version,
    plan_build,
)
from onnxprune.errors import OnnxPruneError
from onnxprune.io.model_io import load_model, write_atomic

if TYPE_CHECKING:
    import tensorrt as trt_t

INSTALL_HINT = ("TensorRT is not installed: pip install 'onnxprune[tensorrt]' "
                "--extra-index-url https://pypi.nvidia.com (on Jetson, use the python3-libnvinfer package "
                "that JetPack ships), or use --emit-trtexec")
_ELIGIBLE = re.compile(r"Layers eligible for sparse math:\s*(.*)")
_PICKED = re.compile(r"picked sparse implementation for layers:\s*(.*)")


class TensorRTMissingError(OnnxPruneError):
    pass


class EngineBuildError(OnnxPruneError):
    def __init__(self, message: str, *, errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors


def require_tensorrt() -> str:
    """The installed TensorRT version, or TensorRTMissingError.

    A stubs-only install (tensorrt-stubs) leaves an importable, empty `tensorrt` namespace package;
    that counts as missing.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        raise TensorRTMissingError(INSTALL_HINT) from None
    if not hasattr(trt, "Builder"):
        raise TensorRTMissingError(INSTALL_HINT)
    return str(getattr(trt, "__version__", "0"))


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    layer_type: str
    tactic: str
    sparse_weights: bool  # the layer's ONNX weight is 2:4 (or the builder listed it as eligible)
    sparse_tactic: bool  # the builder picked a sparse kernel


@dataclass
class EngineReport:
    plan_path: str
    tensorrt_version: str
    plan: BuildPlan
    layers: list[LayerSparsity] = field(default_factory=list)
    log_warnings: list[str] = field(default_factory=list)
    dense_plan_path: str | None = None
    latency_ms: float | None = None
    dense_latency_ms: float | None = None
    ort_max_abs_diff: float | None = None

    @property
    def speedup(self) -> float | None:
        if self.latency_ms and self.dense_latency_ms:
            return self.dense_latency_ms / self.latency_ms
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan_path, "tensorrt": self.tensorrt_version,
            "network_flags": list(self.plan.network_flags), "builder_flags": list(self.plan.builder_flags),
            "strongly_typed": self.plan.strongly_typed, "notes": list(self.plan.notes),
            "layers": [vars(layer) for layer in self.layers],
            "sparse_layers": sum(layer.sparse_tactic for layer in self.layers),
            "dense_plan": self.dense_plan_path, "latency_ms": self.latency_ms,
            "dense_latency_ms": self.dense_latency_ms, "speedup": self.speedup,
            "ort_max_abs_diff": self.ort_max_abs_diff,
        }


def _split_names(text: str) -> set[str]:
    return {n.strip() for n in re.split(r",\s*", text.strip().rstrip(".")) if n.strip()}


def sparse_layers_from_log(lines: list[str]) -> tuple[set[str], set[str]]:
    """(eligible, picked) layer names from the builder's "(Sparsity)" log lines."""
    eligible: set[str] = set()
    picked: set[str] = set()
    for line in lines:
        if m := _ELIGIBLE.search(line):
            eligible |= _split_names(m.group(1))
        if m := _PICKED.search(line):
            picked |= _split_names(m.group(1))
    return eligible, picked


def layers_from_inspector(info_json: str, *, sparse_nodes: set[str], eligible: set[str],
                          picked: set[str]) -> list[LayerSparsity]:
    """Per-layer sparsity from `EngineInspector.get_engine_information(LayerInformationFormat.JSON)`."""
    info = json.loads(info_json)
    out: list[LayerSparsity] = []
    for layer in info.get("Layers", []):
        if isinstance(layer, str):  # built without DETAILED verbosity: names only
            layer = {"Name": layer}
        name = str(layer.get("Name", ""))
        tactic = str(layer.get("TacticName", layer.get("TacticValue", "")))
        parts = {p.strip() for p in name.split(" + ")}
        weights = bool(parts & sparse_nodes) or name in eligible or bool(parts & eligible)
        chosen = "sparse" in tactic.lower() or name in picked or bool(parts & picked)
        out.append(LayerSparsity(name, str(layer.get("LayerType", "")), tactic, weights, chosen))
    return out


def _flag_value(enum: Any, name: str, version: str) -> int:
    member = getattr(enum, name, None)
    if member is None:
        raise EngineBuildError(f"TensorRT {version} has no {getattr(enum, '__name__', 'flag')}.{name}")
    return int(member)


def _parser_errors(parser: Any, model: onnx.ModelProto) -> tuple[str, ...]:
    names = [n.name or f"<{n.op_type} #{i}>" for i, n in enumerate(model.graph.node)]
    ops = [n.op_type for n in model.graph.node]
    out: list[str] = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)
        node_name_fn = getattr(err, "node_name", None)  # 10.x+
        index = int(err.node())
        name = str(node_name_fn()) if callable(node_name_fn) else ""
        if not name and 0 <= index < len(names):
            name = names[index]
        op = ops[index] if 0 <= index < len(ops) else ""
        where = f"node {name!r} ({op})" if name else "model"
        out.append(f"{where}: {err.desc()}")
    return tuple(out)


def _read_cache(path: str | None) -> bytes:
    if path and os.path.exists(path):
        return Path(path).read_bytes()
    return b""


def dense_plan_path(plan_path: str | os.PathLike[str]) -> str:
    """Where `dense_twin` writes the dense engine: `<plan>.dense.plan`."""
    return str(Path(plan_path).with_suffix(".dense.plan"))


def _apply_shapes(builder: trt_t.Builder, network: trt_t.INetworkDefinition, config: trt_t.IBuilderConfig,
                  shapes: Mapping[str, ShapeRange]) -> None:
    import tensorrt as trt

    inputs = [network.get_input(i) for i in range(int(network.num_inputs))]
    names = {t.name for t in inputs}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise EngineBuildError(f"--shapes names {unknown} are not network inputs ({sorted(names)})")
    dynamic = [t.name for t in inputs if any(t.shape[i] < 0 for i in range(len(t.shape)))]
    missing = [n for n in dynamic if n not in shapes]
    if missing:
        raise EngineBuildError(f"dynamic inputs {missing} need --shapes NAME:MIN/OPT/MAX")
    if not shapes:
        return
    profile = builder.create_optimization_profile()
    for name, rng in shapes.items():
        profile.set_shape(name, trt.Dims(list(rng.min)), trt.Dims(list(rng.opt)), trt.Dims(list(rng.max)))
    config.add_optimization_profile(profile)


def _configure(builder: trt_t.Builder, config: trt_t.IBuilderConfig, plan: BuildPlan, options: BuildOptions,
               version: str) -> trt_t.ITimingCache | None:
    """Set flags, workspace, DLA and timing cache on `config`; returns the timing cache object (or None)."""
    import tensorrt as trt

    for name in plan.builder_flags:
        config.set_flag(trt.BuilderFlag(_flag_value(trt.BuilderFlag, name, version)))
    if options.workspace_mib is not None:
        size = options.workspace_mib << 20
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)
        else:  # pre-8.4 API, unknown to the 10.x stubs
            setattr(config, "max_workspace_size", size)  # noqa: B010
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.dla_core is not None:
        if int(getattr(builder, "num_DLA_cores", 0)) <= options.dla_core:
            raise EngineBuildError(f"--dla-core {options.dla_core}: this device has "
                                   f"{getattr(builder, 'num_DLA_cores', 0)} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
    cache = None
    if options.timing_cache:
        cache = config.create_timing_cache(_read_cache(options.timing_cache))
        config.set_timing_cache(cache, False)
    return cache


def _capture_logger(trt: Any) -> Any:
    class _Capture(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            self.lines.append(msg)
            if severity in (trt.ILogger.WARNING, trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.warnings.append(msg)

    return _Capture()


def _build_once(onnx_path: str, model: onnx.ModelProto, plan: BuildPlan, options: BuildOptions,
                version: str) -> tuple[bytes, Any, list[str], list[str]]:
    """Parse and build; returns (serialized plan, logger, log lines, warnings)."""
    import tensorrt as trt

    logger = _capture_logger(trt)
    builder = trt.Builder(logger)
    net_flags = 0
    for name in plan.network_flags:
        net_flags |= 1 << _flag_value(trt.NetworkDefinitionCreationFlag, name, version)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = _parser_errors(parser, model)
        raise EngineBuildError("TensorRT cannot parse the model:\n  " + "\n  ".join(errors or ("unknown error",)),
                               errors=errors)
    config = builder.create_builder_config()
    cache = _configure(builder, config, plan, options, version)
    _apply_shapes(builder, network, config, options.shapes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        last = [w for w in logger.warnings][-3:]
        raise EngineBuildError("TensorRT engine build failed" + (": " + " | ".join(last) if last else ""))
    if cache is not None and options.timing_cache:
        write_atomic(options.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized)), logger, list(logger.lines), list(logger.warnings)


def _inspect(plan_bytes: bytes, logger: Any, *, sparse_nodes: set[str], log: list[str]) -> list[LayerSparsity]:
    import tensorrt as trt

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EngineBuildError("TensorRT cannot deserialize the engine it just built")
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    eligible, picked = sparse_layers_from_log(log)
    return layers_from_inspector(info, sparse_nodes=sparse_nodes, eligible=eligible, picked=picked)


def _sparse_nodes(model: onnx.ModelProto) -> set[str]:
    from onnxprune.sparsity.layout import is_nm_compliant, weight_sites

    inits = {t.name: t for t in model.graph.initializer}
    out: set[str] = set()
    for site in weight_sites(model):
        w = onnx.numpy_helper.to_array(inits[site.initializer])
        if is_nm_compliant(w, site.reduction_axis, 2, 4):
            out.add(site.node)
    return out


def _feed(model: onnx.ModelProto, shapes: Mapping[str, ShapeRange]) -> dict[str, np.ndarray]:
    from onnxprune.io.inputs import random_inputs

    return random_inputs(model, shapes={n: r.opt for n, r in shapes.items()})


def run_engine(plan_bytes: bytes, feed: Mapping[str, np.ndarray], *, iters: int = 50) -> tuple[dict[str, np.ndarray], float]:
    """Outputs and median latency (ms) of an engine. Needs a GPU and polygraphy."""
    try:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError:
        raise OnnxPruneError("running an engine needs polygraphy: pip install polygraphy") from None
    with TrtRunner(EngineFromBytes(plan_bytes)) as runner:
        outputs = {k: np.asarray(v) for k, v in runner.infer(dict(feed)).items()}
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            runner.infer(dict(feed))
            times.append(time.perf_counter() - t0)
    return outputs, float(np.median(times) * 1e3)


def _compare_ort(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], trt_out: Mapping[str, np.ndarray]) -> float:
    from onnxprune.io.runtime import run

    ref = run(model, feed)
    diffs = [float(np.max(np.abs(ref[k].astype(np.float64) - np.asarray(trt_out[k]).astype(np.float64))))
             for k in ref if k in trt_out and ref[k].size]
    return max(diffs) if diffs else 0.0


def build_engine(onnx_path: str | os.PathLike[str], plan_path: str | os.PathLike[str], *, sparse: bool = False,
                 fp16: bool = False, int8: bool = False, shapes: Mapping[str, ShapeRange] | None = None,
                 workspace: int | None = None, timing_cache: str | None = None, dla_core: int | None = None,
                 gpu_fallback: bool = False, dense_twin: bool = False, compare: bool = False,
                 strongly_typed: bool = False) -> EngineReport:
    """Build `plan_path` from `onnx_path`; `workspace` is in MiB.

    dense_twin: also build `<plan>.dense.plan` without sparse weights and time both (GPU).
    compare: run the engine and ONNX Runtime on the same random inputs and report the max abs diff (GPU).
    """
    version = require_tensorrt()
    path = os.fspath(onnx_path)
    model = load_model(path)
    check_shape_ranges(model, shapes or {})
    options = BuildOptions(sparse=sparse, fp16=fp16, int8=int8, shapes=dict(shapes or {}), workspace_mib=workspace,
                           timing_cache=timing_cache, dla_core=dla_core, gpu_fallback=gpu_fallback,
                           strongly_typed=strongly_typed)
    plan = plan_build(parse_version(version), options, model_precision(model))
    data, logger, log, warnings = _build_once(path, model, plan, options, version)
    write_atomic(plan_path, data)
    report = EngineReport(os.fspath(plan_path), version, plan, log_warnings=warnings)
    report.layers = _inspect(data, logger, sparse_nodes=_sparse_nodes(model), log=log)
    if not (dense_twin or compare):
        return report
    feed = _feed(model, options.shapes)
    outputs, report.latency_ms = run_engine(data, feed)
    if compare:
        report.ort_max_abs_diff = _compare_ort(model, feed, outputs)
    if dense_twin:
        dense_opts = replace(options, sparse=False, force_sparsity=False)
        dense_plan = plan_build(parse_version(version), dense_opts, model_precision(model))
        dense_data, _, _, _ = _build_once(path, model, dense_plan, dense_opts, version)
        report.dense_plan_path = dense_plan_path(plan_path)
        write_atomic(report.dense_plan_path, dense_data)
        _, report.dense_latency_ms = run_engine(dense_data, feed)
    return report
