"""Normalise real exports so that every weight is an initializer.

- Constant nodes (Paddle, dynamo exports) become initializers.
- Constant subgraphs (ConstantOfShape, Cast, Transpose of a weight, Shape of a static tensor,
  Shape->Gather/Slice of static dims) are folded by running them once in ONNX Runtime.
- Weights listed as graph inputs (IR < 4) stop being inputs.
- A Concat building the target of several Reshapes is copied for each (pruning rewrites its entries per Reshape).
- Nodes without names get unique names. Control-flow subgraphs and custom-domain ops are kept as they are.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.graph.view import GraphView, has_subgraph, node_attr
from onnxprune.io import skeleton
from onnxprune.io.runtime import run, session
from onnxprune.passes.base import Pass, PassResult

NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "Dropout"}
FOLD_MAX_ELEMENTS = 160_000_000


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None  # sparse_value / string forms are left alone


class ConstantsToInitializers(Pass):
    name = "constants-to-initializers"

    def call(self, model: onnx.ModelProto) -> PassResult:
        keep: list[onnx.NodeProto] = []
        outputs = {o.name for o in model.graph.output}
        changed = 0
        for node in model.graph.node:
            value = constant_node_value(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
            if value is None or node.output[0] in outputs:
                keep.append(node)
                continue
            model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            changed += 1
        if changed:
            del model.graph.node[:]
            model.graph.node.extend(keep)
        return PassResult(model, changed > 0, [f"{changed} Constant nodes -> initializers"] if changed else [])


class WeightsNotInputs(Pass):
    name = "weights-not-inputs"

    def call(self, model: onnx.ModelProto) -> PassResult:
        inits = {t.name for t in model.graph.initializer}
        real = [i for i in model.graph.input if i.name not in inits]
        if len(real) == len(model.graph.input):
            return PassResult(model, False)
        if model.ir_version < 4:
            model.ir_version = 4
        del model.graph.input[:]
        model.graph.input.extend(real)
        return PassResult(model, True, ["initializers removed from graph inputs"])


class NameNodes(Pass):
    name = "name-nodes"

    def call(self, model: onnx.ModelProto) -> PassResult:
        seen: set[str] = set()
        changed = False
        for i, node in enumerate(model.graph.node):
            if not node.name or node.name in seen:
                base = node.name or f"{node.op_type}_{i}"
                name, k = base, 0
                while name in seen:
                    k += 1
                    name = f"{base}_{k}"
                node.name = name
                changed = True
            seen.add(node.name)
        return PassResult(model, changed)


def _inferred(model: onnx.ModelProto) -> tuple[dict[str, list[int | None]], dict[str, int]]:
    """Static dims (None where dynamic) and element types from ONNX shape inference."""
    try:
        inferred = skeleton.infer(model, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best-effort here
        return {}, {}
    shapes: dict[str, list[int | None]] = {}
    types: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type:
            types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return shapes, types


def _shape_dims(node: onnx.NodeProto, static: dict[str, list[int | None]]) -> list[int | None] | None:
    """The dims a Shape node returns (None entries are dynamic), honouring start/end (opset 15)."""
    dims = static.get(node.input[0])
    if dims is None:
        return None
    rank = len(dims)
    start = int(node_attr(node, "start", 0))  # type: ignore[call-overload]
    end_attr = node_attr(node, "end", None)
    end = rank if end_attr is None else int(end_attr)  # type: ignore[call-overload]
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = max(0, min(rank, end + rank if end < 0 else end))
    return dims[start:end]


def _shape_fold(node: onnx.NodeProto, view: GraphView, static: dict[str, list[int | None]]) -> np.ndarray | None:
    """Value of a Shape node, or of Gather over a Shape node, when the selected dims are static."""
    if node.op_type == "Shape":
        sel = _shape_dims(node, static)
        return None if sel is None or any(d is None for d in sel) else np.array(sel, dtype=np.int64)
    src = view.producer.get(node.input[0])
    if src is None or src[0].op_type != "Shape":
        return None
    dims = _shape_dims(src[0], static)
    if dims is None:
        return None
    if node.op_type == "Gather" and view.is_const(node.input[1]) and int(node_attr(node, "axis", 0)) == 0:  # type: ignore[call-overload]
        idx = view.array(node.input[1]).astype(np.int64)
        if np.any(idx >= len(dims)) or np.any(idx < -len(dims)):
            return None
        picked = [dims[int(i)] for i in idx.reshape(-1)]
        if all(d is not None for d in picked):
            return np.array(picked, dtype=np.int64).reshape(idx.shape)
    return None


class FoldConstants(Pass):
    """Evaluate every node whose inputs are all constant, in one ONNX Runtime session."""

    name = "fold-constants"

    def call(self, model: onnx.ModelProto) -> PassResult:
        view = GraphView(model)
        static, types = _inferred(model)
        known: set[str] = set(view.initializers)
        direct: dict[str, np.ndarray] = {}
        foldable: list[onnx.NodeProto] = []
        outputs = view.graph_outputs
        for node in model.graph.node:
            if node.domain not in ("", "ai.onnx") or has_subgraph(node) or node.op_type in NONDETERMINISTIC:
                continue
            if any(o in outputs for o in node.output):
                continue
            if node.op_type in ("Shape", "Gather") and not all(x in known for x in node.input if x):
                value = _shape_fold(node, view, static)
                if value is not None:
                    direct[node.output[0]] = value
                    known.add(node.output[0])
                continue
            if node.input and all((not x) or x in known for x in node.input):
                foldable.append(node)
                known.update(o for o in node.output if o)
        if not foldable and not direct:
            return PassResult(model, False)
        values = dict(direct)
        values.update(self._evaluate(model, foldable, direct, view, types))
        return self._replace(model, values)

    @staticmethod
    def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto], direct: dict[str, np.ndarray],
                  view: GraphView, types: dict[str, int]) -> dict[str, np.ndarray]:
        if not nodes:
            return {}
        # Lists in node order, not sets: the folded initializers' order must not follow PYTHONHASHSEED.
        produced = list(dict.fromkeys(o for n in nodes for o in n.output if o))
        made = set(produced)
        needed = list(dict.fromkeys(x for n in nodes for x in n.input if x and x not in made))
        inits = [view.initializers[x] for x in needed if x in view.initializers]
        inits += [numpy_helper.from_array(v, k) for k, v in direct.items() if k in needed]
        # Outputs: whatever a non-folded node (or subgraph) reads.
        folded_names = {n.name for n in nodes}
        readers = {x for n in model.graph.node if n.name not in folded_names for x in n.input}
        readers |= view.captured
        outs = [o for o in produced if o in readers and o in types]
        if not outs:
            return {}
        g = helper.make_graph(list(nodes), "fold", [], [helper.make_tensor_value_info(o, types[o], None) for o in outs],
                              initializer=inits)
        m = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=max(model.ir_version, 4))
        vals = run(session(m), {}, outs)
        return {k: np.asarray(v) for k, v in vals.items() if np.asarray(v).size <= FOLD_MAX_ELEMENTS}

    @staticmethod
    def _replace(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> PassResult:
        if not values:
            return PassResult(model, False)
        for name, v in values.items():
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(v), name))
        keep = [n for n in model.graph.node if not any(o in values for o in n.output)]
        removed = len(model.graph.node) - len(keep)
        del model.graph.node[:]
        model.graph.node.extend(keep)
        RemoveUnused().call(model)
        return PassResult(model, True, [f"folded {removed} constant nodes"])


class RemoveUnused(Pass):
    """Drop nodes whose outputs nobody reads and initializers nobody reads."""

    name = "remove-unused"

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = model.graph
        view = GraphView(model)
        live = set(view.graph_outputs) | view.captured
        keep: list[onnx.NodeProto] = []
        for node in reversed(list(g.node)):
            if any(o in live for o in node.output) or node.domain not in ("", "ai.onnx") or has_subgraph(node):
                keep.append(node)
                live.update(x for x in node.input if x)
        keep.reverse()
        changed = len(keep) != len(g.node)
        if changed:
            del g.node[:]
            g.node.extend(keep)
        inits = [t for t in g.initializer if t.name in live or t.name in {i.name for i in g.input}]
        if len(inits) != len(g.initializer):
            changed = True
            del g.initializer[:]
            g.initializer.extend(inits)
        vis = [v for v in g.value_info if v.name in live or any(v.name in n.output for n in keep)]
        if len(vis) != len(g.value_info):
            del g.value_info[:]
            g.value_info.extend(vis)
        return PassResult(model, changed)


class OwnShapeTargets(Pass):
    """Each Reshape gets its own target-building Concat: pruning rewrites the constant entries of a
    Reshape's target for that Reshape's channels, which must not change another reader of the same
    Concat (dynamo exports share one target between the q/k/v reshapes of every layer)."""

    name = "own-shape-targets"

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = model.graph
        producer = {o: n for n in g.node for o in n.output}
        seen: set[str] = set()
        added: list[tuple[int, onnx.NodeProto]] = []
        for i, node in enumerate(g.node):
            target = node.input[1] if node.op_type == "Reshape" and len(node.input) > 1 else ""
            concat = producer.get(target)
            if concat is None or concat.op_type != "Concat":
                continue
            if target not in seen:  # the first Reshape keeps the original
                seen.add(target)
                continue
            clone = onnx.NodeProto()
            clone.CopyFrom(concat)
            clone.name = f"{concat.name or concat.output[0]}__for_{node.name or node.output[0]}"
            del clone.output[:]
            clone.output.append(f"{target}__for_{node.name or node.output[0]}")
            node.input[1] = clone.output[0]
            added.append((i, clone))
        for i, clone in reversed(added):  # just before its Reshape: the Concat's inputs are defined above
            g.node.insert(i, clone)
        return PassResult(model, bool(added), [f"{len(added)} shared Reshape targets copied"] if added else [])


class Normalize(Pass):
    """The whole normalisation, on a copy: the caller's model is never modified."""

    name = "normalize"

    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnxprune.passes.base import PassManager

        m = copy.deepcopy(model)
        result = PassManager([ConstantsToInitializers(), WeightsNotInputs(), FoldConstants(), NameNodes(),
                                     OwnShapeTargets()],
                             steps=4)(m)
        return result
