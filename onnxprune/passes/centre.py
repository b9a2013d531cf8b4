"""Turn a pre-LN LayerNorm residual stream into a centred RMSNorm stream (SliceGPT §3.2), so that
passes/rotate.py can rotate it; the model computes what it computed (to float rounding).

A LayerNorm does not commute with a rotation (its mean moves), an RMSNorm does. With C = I − 11ᵀ/d:

1. every writer of the stream (embedding tables, the patch Conv's weight and bias, the CLS token and
   position embeddings, every branch's output projection and its bias) is multiplied by C along the
   hidden axis, so the stream is zero-mean along it and each LayerNorm's `x − mean(x)` is `x`;
2. each LayerNorm reading it becomes an RMSNorm with the same epsilon and scale (`RMSNormalization`
   from opset 23, else the op-by-op chain graph/layernorm_chains.py recognises and ONNX Runtime fuses; ONNX Runtime's
   SkipLayerNormalization its SkipSimplifiedLayerNormalization, which keeps its bias and sum);
3. its shift β is folded into the biases of the linear layers reading it: b ← b + β·W (a bias Add, a
   Gemm's C, or a new Add when the layer has none).

Only streams whose every reader is such a LayerNorm (passes/hidden_stream.py, `centred=True`) are
changed; a post-LN stream (the norm's output is the next residual's input) is refused with its reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.graph.context import ROLE_WEIGHT_IN
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.view import GraphView, node_attr
from onnxprune.passes.hidden_stream import SKIP_LN, SKIP_RMS, Norm, Stream, find_stream, store

RMS_OPSET = 23  # ONNX's RMSNormalization
AXES_INPUT_OPSET = 18  # ReduceMean's axes: an input from here on, an attribute before


@dataclass
class Centring:
    model: onnx.ModelProto  # the rewritten model (the input model when no stream was centred)
    groups: list[int] = field(default_factory=list)  # the hidden groups centred
    notes: list[str] = field(default_factory=list)


@dataclass
class _Shift:
    """Where β·W of one reader goes: a constant bias (scaled by `factor`), or a new Add after the reader."""

    reader: onnx.NodeProto
    bias: str | None
    factor: float


def centre_layernorm_streams(dg: DependencyGraph) -> Centring:
    """dg's model with every prunable hidden group read by LayerNorms made a centred RMSNorm stream."""
    view = dg.analysis.view
    plans: list[tuple[Stream, list[_Shift]]] = []
    notes: list[str] = []
    for g in dg.prunable:
        if g.kind != "hidden":
            continue
        found = find_stream(dg, g, centred=True)
        shifts = _shifts(view, found) if isinstance(found, Stream) else found
        if isinstance(shifts, str):
            notes.append(f"rotate (approximate): hidden group {g.id} not centred, its LayerNorms stay: {shifts}")
        elif isinstance(found, Stream) and shifts is not None:
            plans.append((found, shifts))
    if not plans:
        return Centring(dg.model, [], notes)
    model = copy.deepcopy(dg.model)
    for s, shifts in plans:
        _centre(model, s, shifts)
        notes.append(f"rotate (approximate): hidden group {s.group.id}: its writers centred, {len(s.norms)} "
                     f"LayerNorms made RMSNorms, their shifts folded into {len(shifts)} readers")
    return Centring(model, [s.group.id for s, _ in plans], notes)


def _shifts(view: GraphView, s: Stream) -> list[_Shift] | str:
    """Where each reader of a norm with a shift takes β·W, or why one cannot."""
    out = []
    for norm in s.norms:
        for r in norm.readers if norm.shift is not None else []:
            w = view.shape(r.input[1]) or ()
            if len(w) != 2:
                return f"reader '{r.name}' of LayerNorm '{norm.nodes[-1]}' has a {len(w)}-d weight"
            alpha, beta = float(node_attr(r, "alpha", 1.0)), float(node_attr(r, "beta", 1.0))  # type: ignore[arg-type]
            if r.op_type == "Gemm" and len(r.input) > 2 and r.input[2] and beta != 0.0 and \
                    _own_bias(view, r, r.input[2]):
                out.append(_Shift(r, r.input[2], alpha / beta))  # C is added as beta·C
                continue
            add = view.consumers.get(r.output[0], [])
            bias = add[0][0].input[1 - add[0][1]] if len(add) == 1 and add[0][0].op_type == "Add" else None
            if bias is not None and (view.shape(bias) or ()) == (w[1] if _trans_b(r) == 0 else w[0],) \
                    and _own_bias(view, add[0][0], bias):
                out.append(_Shift(r, bias, alpha))
            else:
                out.append(_Shift(r, None, alpha))
    return out


def _own_bias(view: GraphView, node: onnx.NodeProto, name: str) -> bool:
    """A constant initializer read by `node` alone."""
    return name in view.initializers and [c.name for c, _ in view.consumers.get(name, [])] == [node.name]


def _trans_b(node: onnx.NodeProto) -> int:
    return int(node_attr(node, "transB", 0)) if node.op_type == "Gemm" else 0  # type: ignore[call-overload]


def _centre(model: onnx.ModelProto, s: Stream, shifts: list[_Shift]) -> None:
    """Centre the writers, fold each shift into its readers, and rewrite the norms (in place)."""
    values = {t.name: t for t in model.graph.initializer}
    for name, (m, _) in s.members.items():
        if m.role != ROLE_WEIGHT_IN:
            a = numpy_helper.to_array(values[name]).astype(np.float64)
            store(values, name, a - a.mean(axis=m.track.axes[0], keepdims=True))
    after: dict[str, onnx.NodeProto] = {}  # reader -> the bias Add it gets
    copies = {n.name: n for n in model.graph.node}  # s holds the analysed model's nodes, not these
    folds = {sh.reader.name: sh for sh in shifts}
    for norm in s.norms:
        if norm.shift is None:
            continue
        beta = s.in_slots(values, norm.shift)
        for r in norm.readers:
            sh = folds[r.name]
            member, wpos = s.members[r.input[1]]
            w = numpy_helper.to_array(values[r.input[1]]).astype(np.float64)
            bw = sh.factor * np.tensordot(beta[wpos], w, axes=([0], [member.track.axes[0]]))
            if sh.bias is not None:
                store(values, sh.bias, numpy_helper.to_array(values[sh.bias]).astype(np.float64) + bw)
                continue
            name = f"{r.name}/folded_shift"  # a reader without a bias gets one
            model.graph.initializer.append(numpy_helper.from_array(bw.astype(_dtype(values, norm)), name))
            after[r.name] = helper.make_node("Add", [name + "_in", name], [r.output[0]], name=name)
            copies[r.name].output[0] = name + "_in"
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    drop = {n for norm in s.norms for n in norm.nodes}
    last = {norm.nodes[-1]: norm for norm in s.norms}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:  # each norm replaced where its last node stood
        if node.name in last:
            nodes += _rms(model, last[node.name], node, opset, values)
        elif node.name not in drop:
            nodes += [node] + ([after[node.name]] if node.name in after else [])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    read = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    dropped = {norm.shift for norm in s.norms} - read  # the shifts now live in the readers' biases
    kept = [t for t in model.graph.initializer if t.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _rms(model: onnx.ModelProto, norm: Norm, last: onnx.NodeProto, opset: int,
         values: dict[str, onnx.TensorProto]) -> list[onnx.NodeProto]:
    """RMSNorm of norm.input written to norm.output, with norm's scale (if any) and epsilon; `last` is
    the norm's last node (ORT's SkipLayerNormalization becomes its simplified form, bias and sum kept)."""
    p, x, dtype = norm.nodes[-1] + "/rms", norm.input, _dtype(values, norm)
    if last.op_type == SKIP_LN:
        bias = list(last.input[4:5])
        outputs = [o if i not in (1, 2) else "" for i, o in enumerate(last.output)]
        return [helper.make_node(SKIP_RMS, [*last.input[:3], *bias], outputs, name=p, domain=last.domain,
                                 epsilon=norm.epsilon)]
    if opset >= RMS_OPSET and norm.scale is not None:
        return [helper.make_node("RMSNormalization", [x, norm.scale], [norm.output], name=p, axis=-1,
                                 epsilon=norm.epsilon)]
    model.graph.initializer.append(numpy_helper.from_array(np.array(norm.epsilon, dtype), p + "_eps"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(2.0, dtype), p + "_two"))
    if opset >= AXES_INPUT_OPSET:
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), p + "_axes"))
        mean = helper.make_node("ReduceMean", [p + "_sq", p + "_axes"], [p + "_ms"], name=p + "_mean", keepdims=1)
    else:
        mean = helper.make_node("ReduceMean", [p + "_sq"], [p + "_ms"], name=p + "_mean", axes=[-1], keepdims=1)
    n = p + "_n" if norm.scale is not None else norm.output
    out = [helper.make_node("Pow", [x, p + "_two"], [p + "_sq"], name=p + "_sq"), mean,  # the form ORT fuses
           helper.make_node("Add", [p + "_ms", p + "_eps"], [p + "_mse"], name=p + "_eps"),
           helper.make_node("Sqrt", [p + "_mse"], [p + "_rms"], name=p + "_sqrt"),
           helper.make_node("Div", [x, p + "_rms"], [n], name=p + "_div")]
    if norm.scale is not None:
        out.append(helper.make_node("Mul", [n, norm.scale], [norm.output], name=p))
    return out


def _dtype(values: dict[str, onnx.TensorProto], norm: Norm) -> np.dtype:
    """The norm's float type (its scale's or shift's)."""
    for name in (norm.scale, norm.shift):
        if name is not None and name in values:
            return numpy_helper.to_array(values[name]).dtype
    return np.dtype(np.float32)
