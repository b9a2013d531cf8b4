"""`check-trt`: will this ONNX model build with TensorRT, and will 2:4 sparsity pay off? CPU only.

Checks, in order:

1. Opset range and every node against the ONNX-TensorRT operator matrix, with the restrictions that
   can be decided from the file (see `support.py`).
2. For each Conv/Gemm/MatMul weight (an initializer, or the INT8 initializer behind a DequantizeLinear
   in a Q/DQ model): is it 2:4 along the axis TensorRT's sparse kernels use (Conv axis 1, MatMul axis 0
   of B, Gemm axis 0 or 1 by transB)? Q/DQ models also get which layers run INT8 and the Q/DQ
   placements that stop TensorRT's fusions (`qdq.py`).
3. Channel counts that are not multiples of `round_to` (8 for FP16 tensor cores; use 16 or 32 for INT8).
4. Layers too small to gain from sparsity. These thresholds are heuristics, not TensorRT rules:
   - reduction length (input channels per group) < 64: sparse kernels tile that axis in steps of 32-64,
     so one or two tiles leave nothing to skip once the 2:4 metadata is loaded;
   - output channels < 64: too few rows to fill a sparse tensor-core tile;
   - fewer than `min_macs` multiply-accumulates per image (when shapes are static): such layers run in
     microseconds, launch and reformat costs dominate, and the builder usually keeps the dense tactic;
   - grouped and depthwise convolutions: no sparse tactic exists for them.
   TensorRT decides per layer by timing both tactics; `build-engine` reports what it chose.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.deploy.tensorrt.build_options import parse_version
from onnxprune.deploy.tensorrt.findings import Finding, Severity
from onnxprune.deploy.tensorrt.qdq_checks import int8_layer_names, qdq_findings, qdq_weight_sites
from onnxprune.deploy.tensorrt.support import DEFAULT_DOMAINS, GraphView, attr, check_node, support_matrix
from onnxprune.sparsity.layout import WeightSite, is_nm_compliant, nm_groups, weight_sites

MIN_REDUCTION = 64
MIN_OUT_CHANNELS = 64
DEFAULT_MIN_MACS = 5_000_000
N, M = 2, 4


@dataclass(frozen=True)
class LayerReport:
    """One Conv/Gemm/MatMul weight as TensorRT's sparse kernels see it."""

    node: str
    op_type: str
    weight: str
    shape: tuple[int, ...]
    axis: int
    reduction: int  # length of the 2:4 axis (input channels per group)
    out_channels: int
    groups: int
    macs: int | None  # per image, when static shapes allow
    nm_compliant: bool
    violating_groups: float | None  # fraction of 4-groups with > 2 non-zeros; None when length % 4 != 0
    zero_fraction: float
    sparse_candidate: bool  # big enough, and of a kind, for a sparse tactic to be worth it
    notes: tuple[str, ...] = ()
    int8: bool = False  # input and weight come through Q/DQ (TensorRT builds it in INT8)


@dataclass
class PreflightReport:
    model: str
    opset: int | None
    table_version: str
    target: str | None
    round_to: int
    findings: list[Finding] = field(default_factory=list)
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        """No finding that would stop the parser or the builder."""
        return not self.errors

    @property
    def sparse_ready(self) -> list[LayerReport]:
        return [layer for layer in self.layers if layer.nm_compliant and layer.sparse_candidate]

    def summary(self) -> str:
        return (f"{len(self.errors)} error(s), {len(self.warnings)} warning(s); "
                f"{len(self.sparse_ready)}/{len(self.layers)} weight layers 2:4 and large enough for sparse tactics")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "opset": self.opset,
            "operator_table": f"onnx-tensorrt docs/operators.md (TensorRT {self.table_version})",
            "target": self.target,
            "round_to": self.round_to,
            "ok": self.ok,
            "summary": self.summary(),
            "findings": [f.to_dict() for f in self.findings],
            "layers": [{**asdict(layer), "shape": list(layer.shape), "notes": list(layer.notes)}
                       for layer in self.layers],
        }

    def to_json(self, *, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def render(self, console: Any = None) -> None:
        """Print as rich tables (findings, then layers, then the summary)."""
        from rich.console import Console
        from rich.table import Table

        con = console if console is not None else Console()
        style = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}
        if self.findings:
            t = Table(title=f"TensorRT preflight: {self.model}", show_lines=False)
            for col in ("severity", "check", "node", "op", "message"):
                t.add_column(col, overflow="fold")
            for f in self.findings:
                t.add_row(f"[{style[f.severity]}]{f.severity.value}[/]", f.check, f.node, f.op_type, f.message)
            con.print(t)
        if self.layers:
            t = Table(title="Weights and 2:4 sparsity (axis = TensorRT reduction axis)")
            quantized = any(layer.int8 for layer in self.layers)
            for col in ("node", "op", "shape", "axis", "K", "out", "MACs", "2:4", "zeros", "candidate",
                        *(("precision",) if quantized else ())):
                t.add_column(col, overflow="fold")
            for layer in self.layers:
                t.add_row(layer.node, layer.op_type, "x".join(map(str, layer.shape)), str(layer.axis),
                          str(layer.reduction), str(layer.out_channels),
                          _human(layer.macs), "[green]yes[/]" if layer.nm_compliant else "[red]no[/]",
                          f"{layer.zero_fraction:.0%}", "yes" if layer.sparse_candidate else "no",
                          *(("INT8" if layer.int8 else "FP",) if quantized else ()))
            con.print(t)
        con.print(("[green]OK[/] " if self.ok else "[bold red]NOT OK[/] ") + self.summary())


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def node_label(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or `<OpType #index>` for unnamed nodes."""
    return node.name or f"<{node.op_type} #{index}>"


def _opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return None


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is a nicety here; fall back to declared types
        return model


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}


def _static_shape(vi: onnx.ValueInfoProto | None) -> tuple[int, ...] | None:
    if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = vi.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims)


def _out_channels(site: WeightSite) -> int:
    if site.op_type == "Conv":
        return site.shape[0]
    if site.op_type == "Gemm":
        return site.shape[0] if site.reduction_axis == 1 else site.shape[1]
    return site.shape[-1]  # MatMul B[..., K, N]


def _macs(site: WeightSite, out_shape: tuple[int, ...] | None) -> int | None:
    if out_shape is None:
        return None
    per_output = int(np.prod(site.shape)) // _out_channels(site)  # weights feeding one output value
    if site.op_type == "Conv":
        spatial = int(np.prod(out_shape[2:])) if len(out_shape) > 2 else 1
        return site.shape[0] * per_output * spatial
    rows = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1  # batch dim excluded
    return rows * per_output * _out_channels(site)


def _layer(site: WeightSite, node: onnx.NodeProto, w: np.ndarray, out_shape: tuple[int, ...] | None,
           *, min_macs: int | None) -> LayerReport:
    g = attr(node, "group", 1) if site.op_type == "Conv" else 1
    groups = g if isinstance(g, int) and g > 0 else 1
    reduction = site.shape[site.reduction_axis]
    out_ch = _out_channels(site)
    compliant = is_nm_compliant(w, site.reduction_axis, N, M)
    violating: float | None = None
    if reduction % M == 0 and w.size:
        per_group = np.count_nonzero(nm_groups(w, site.reduction_axis, M), axis=-1)
        violating = float(np.mean(per_group > N))
    macs = _macs(site, out_shape)
    notes: list[str] = []
    if groups > 1:
        notes.append("grouped/depthwise conv: no sparse tactic")
    if reduction < MIN_REDUCTION:
        notes.append(f"reduction length {reduction} < {MIN_REDUCTION}")
    if out_ch < MIN_OUT_CHANNELS:
        notes.append(f"output channels {out_ch} < {MIN_OUT_CHANNELS}")
    if min_macs is not None and macs is not None and macs < min_macs:
        notes.append(f"{_human(macs)} MACs < {_human(min_macs)}")
    if reduction % M:
        notes.append(f"reduction length {reduction} is not a multiple of {M}")
    zero_fraction = float(1.0 - np.count_nonzero(w) / w.size) if w.size else 0.0
    return LayerReport(site.node, site.op_type, site.initializer, site.shape, site.reduction_axis, reduction, out_ch,
                       groups, macs, compliant, violating, zero_fraction, sparse_candidate=not notes,
                       notes=tuple(notes))


def _layer_findings(layer: LayerReport, *, round_to: int) -> list[Finding]:
    out: list[Finding] = []
    for label, count in (("output channels", layer.out_channels), ("input channels", layer.reduction)):
        if round_to > 1 and count % round_to:
            out.append(Finding(Severity.WARNING, "channel-multiple", layer.node, layer.op_type,
                               f"{label} {count} is not a multiple of {round_to}: tensor-core kernels pad it up"))
    if layer.nm_compliant:
        if not layer.sparse_candidate:
            out.append(Finding(Severity.INFO, "sparsity-no-gain", layer.node, layer.op_type,
                               "2:4 weights, but unlikely to get a sparse tactic: " + "; ".join(layer.notes)))
    elif layer.sparse_candidate:
        share = f"{layer.violating_groups:.0%} of groups" if layer.violating_groups is not None else "length"
        out.append(Finding(Severity.WARNING, "not-2:4", layer.node, layer.op_type,
                           f"weight {layer.weight} is not 2:4 along axis {layer.axis} ({share} violate it); "
                           "TensorRT will run this layer dense"))
    return out


def check_trt(model: onnx.ModelProto, *, round_to: int = 8, min_macs: int | None = DEFAULT_MIN_MACS,
              target: str | None = None, name: str = "") -> PreflightReport:
    """Static TensorRT readiness report. `target` is the TensorRT version (e.g. "8.6", "10.3") or None."""
    if target is not None:
        parse_version(target)  # a one-line error for text that is no version
    matrix = support_matrix()
    opset = _opset(model)
    report = PreflightReport(name or model.graph.name or "model", opset, matrix.tensorrt_version, target, round_to)
    if opset is not None and opset < matrix.opset_min:
        report.findings.append(Finding(Severity.ERROR, "opset", "", "", f"opset {opset} is below the parser's "
                                       f"minimum ({matrix.opset_min}); convert the model with onnx.version_converter"))
    elif opset is not None and opset > matrix.opset_max:
        report.findings.append(Finding(Severity.WARNING, "opset", "", "", f"opset {opset} is above what TensorRT "
                                       f"{matrix.tensorrt_version} documents ({matrix.opset_min}-{matrix.opset_max})"))
    inferred = _infer(model)
    infos = _value_infos(inferred)
    types = {n: vi.type.tensor_type.elem_type for n, vi in infos.items() if vi.type.HasField("tensor_type")}
    view = GraphView(model.graph, elem_types=types)
    for index, node in enumerate(model.graph.node):
        label = node_label(node, index)
        report.findings.extend(f if f.node else replace(f, node=label)
                               for f in check_node(node, view, target=target, matrix=matrix))

    nodes = {(n.name, n.input[1]): (i, n) for i, n in enumerate(model.graph.node) if len(n.input) > 1}
    index_of = {id(n): i for i, n in enumerate(model.graph.node)}
    qdq_sites = qdq_weight_sites(model)
    nodes.update({(s.node, s.initializer): (index_of[id(n)], n) for s, n in qdq_sites})
    int8 = int8_layer_names(model)
    report.findings.extend(qdq_findings(model))
    inits = {t.name: t for t in model.graph.initializer}
    for site in [*weight_sites(model), *(s for s, _ in qdq_sites)]:
        found = nodes.get((site.node, site.initializer))
        if found is None:
            continue
        index, node = found
        try:
            w = numpy_helper.to_array(inits[site.initializer])
        except Exception:  # noqa: BLE001 - external data missing
            continue
        out_shape = _static_shape(infos.get(node.output[0])) if node.output else None
        layer = replace(_layer(site, node, w, out_shape, min_macs=min_macs), node=node_label(node, index),
                        int8=node.name in int8)
        report.layers.append(layer)
        report.findings.extend(_layer_findings(layer, round_to=round_to))
    if report.layers and not any(layer.nm_compliant for layer in report.layers):
        report.findings.append(Finding(Severity.WARNING, "no-2:4", "", "", "no Conv/Gemm/MatMul weight is 2:4; "
                                       "--sparse will not change anything (run `onnxprune sparsify --pattern 2:4`)"))
    return report
