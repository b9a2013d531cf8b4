"""Normalise real exports so that every weight is an initializer.

- Constant nodes (Paddle, dynamo exports) become initializers.
- Constant subgraphs (ConstantOfShape, Cast, Transpose of a weight, Shape of a static tensor) are
  folded by running them once in ONNX Runtime. A Shape read moved by Cast/Gather/Slice/Squeeze/
  Unsqueeze/Concat (a Reshape target built from Shape) becomes a constant where every element it
  reads is a dim that ONNX shape inference proves static: inference is symbolic, so such a dim is
  the same at every input size (a head_dim, a hidden width), and folding it changes no result.
  Dynamic dims (batch, sequence) stay computed; a channel count inference cannot prove (behind a
  Reshape with -1) stays a run-time read, which the analysis follows (graph/rules/shape_ops.py).
- Weights listed as graph inputs (IR < 4) stop being inputs.
- A Concat building the target of several Reshapes is copied for each (pruning rewrites its entries per Reshape).
- Nodes without names get unique names. Control-flow subgraphs and custom-domain ops are kept as they are.
- LayerNorm written out op by op (TF/JAX, TorchScript below opset 17; graph/layernorm_chains.py) becomes
  one LayerNormalization from opset 17; below it the chain is kept (the analysis reads it as one norm).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.graph.layernorm_chains import LayerNormChain, find_layernorm_chains
from onnxprune.graph.view import GraphView, has_subgraph, node_attr
from onnxprune.io import skeleton
from onnxprune.io.external import new_tensor, streams
from onnxprune.io.runtime import run, session
from onnxprune.passes.base import Pass, PassResult, runs_within

NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "Dropout"}
FOLD_MAX_ELEMENTS = 160_000_000
FOLD_BATCH_BYTES = 256 << 20  # folded values held at once for a model whose weights stay on disk


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


# Integer ops whose result, element by element, follows from their inputs' elements: a Shape read
# moved through them stays a list of known or dynamic dims (`_dims_of`).
DIM_MOVES = ("Cast", "Identity", "Squeeze", "Unsqueeze", "Gather", "Slice", "Concat")
INT_TYPES = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)


def _dims_of(node: onnx.NodeProto, view: GraphView, static: dict[str, list[int | None]],
             partial: dict[str, list[int | None]]) -> list[int | None] | None:
    """The elements of a Shape node's output, or of a 1-D integer tensor moved from Shape reads by
    Cast/Squeeze/Unsqueeze/Gather/Slice/Concat: ints where ONNX shape inference proves the dim static
    (the same for every input size), None where it is dynamic."""
    if node.op_type == "Shape":
        return _shape_dims(node, static)
    if node.op_type not in DIM_MOVES or len(node.output) != 1:
        return None

    def elements(x: str) -> list[int | None] | None:
        if x in partial:
            return partial[x]
        if view.is_const(x) and view.array(x).dtype.kind in "iu" and view.array(x).ndim <= 1:
            return [int(v) for v in view.array(x).reshape(-1)]
        return None

    src = elements(node.input[0]) if node.input else None
    if node.op_type == "Concat":
        parts = [elements(x) for x in node.input]
        if int(node_attr(node, "axis", 0)) not in (0, -1) or any(q is None for q in parts):  # type: ignore[call-overload]
            return None
        return [d for q in parts for d in q or []]
    if src is None or node.input[0] not in partial:
        return None
    if node.op_type == "Cast":
        return src if node_attr(node, "to") in INT_TYPES else None
    if node.op_type in ("Identity", "Squeeze", "Unsqueeze"):
        return src
    if node.op_type == "Gather":
        idx = node.input[1]
        if not view.is_const(idx) or int(node_attr(node, "axis", 0)) != 0:  # type: ignore[call-overload]
            return None
        picks = view.array(idx).astype(np.int64).reshape(-1)
        if np.any(picks >= len(src)) or np.any(picks < -len(src)):
            return None
        return [src[int(i)] for i in picks]
    names = [node.input[i] if i < len(node.input) else "" for i in range(1, 5)]  # Slice
    if any(x and not view.is_const(x) for x in names) or not names[0] or not names[1]:
        return None
    starts, ends = (view.array(x).astype(np.int64).reshape(-1) for x in names[:2])
    axes = view.array(names[2]).reshape(-1) if names[2] else np.zeros(1, dtype=np.int64)
    steps = view.array(names[3]).reshape(-1) if names[3] else np.ones(1, dtype=np.int64)
    if starts.size != 1 or int(axes[0]) not in (0, -1) or int(steps[0]) == 0:
        return None
    return src[slice(int(starts[0]), int(ends[0]), int(steps[0]))]


def _shape_fold(node: onnx.NodeProto, view: GraphView, static: dict[str, list[int | None]],
                partial: dict[str, list[int | None]], types: dict[str, int]) -> np.ndarray | None:
    """The value of a Shape read (moved by `_dims_of`'s ops) when every element is static; records
    partly static reads in `partial` for the nodes after it."""
    dims = _dims_of(node, view, static, partial)
    if dims is None:
        return None
    out = node.output[0]
    if any(d is None for d in dims):
        partial[out] = dims
        return None
    shape = static.get(out)
    if out not in types or shape is None or None in shape:
        return None  # the rank or type of the result is not known: leave it to run time
    sizes = [int(d) for d in shape if d is not None]
    if math.prod(sizes) != len(dims):
        return None
    return np.array(dims, dtype=onnx.helper.tensor_dtype_to_np_dtype(types[out])).reshape(sizes)


class FoldConstants(Pass):
    """Evaluate every node whose inputs are all constant, in one ONNX Runtime session; Shape reads of
    dims ONNX shape inference proves static become constants too (`_shape_fold`)."""

    name = "fold-constants"

    def call(self, model: onnx.ModelProto) -> PassResult:
        view = GraphView(model)
        static, types = _inferred(model)
        known: set[str] = set(view.initializers)
        direct: dict[str, np.ndarray] = {}
        partial: dict[str, list[int | None]] = {}
        foldable: list[onnx.NodeProto] = []
        outputs = view.graph_outputs
        for node in model.graph.node:
            if node.domain not in ("", "ai.onnx") or has_subgraph(node) or node.op_type in NONDETERMINISTIC:
                continue
            if any(o in outputs for o in node.output):
                continue
            if node.op_type in ("Shape", *DIM_MOVES) and not all(x in known for x in node.input if x):
                value = _shape_fold(node, view, static, partial, types)
                if value is not None:
                    direct[node.output[0]] = value
                    known.add(node.output[0])
                continue
            if node.input and all((not x) or x in known for x in node.input):
                foldable.append(node)
                known.update(o for o in node.output if o)
        if not foldable and not direct:
            return PassResult(model, False)
        values = {k: new_tensor(model, v, k) for k, v in direct.items()}
        for batch in self._evaluate(model, foldable, direct, view, types, static):
            values.update((k, new_tensor(model, v, k)) for k, v in batch.items())
        return self._replace(model, values)

    @staticmethod
    def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto], direct: dict[str, np.ndarray],
                  view: GraphView, types: dict[str, int],
                  static: dict[str, list[int | None]]) -> Iterator[dict[str, np.ndarray]]:
        """The folded values, all at once; for a model whose weights stay on disk, in batches of about
        FOLD_BATCH_BYTES (each stored by the caller before the next is computed)."""
        if not nodes:
            return
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
            return
        g = helper.make_graph(list(nodes), "fold", [], [helper.make_tensor_value_info(o, types[o], None) for o in outs],
                              initializer=inits)
        m = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=max(model.ir_version, 4))
        sess = session(m)
        for batch in _batches(outs, static, types) if streams(model) else [outs]:
            vals = run(sess, {}, batch)
            yield {k: np.asarray(v) for k, v in vals.items() if np.asarray(v).size <= FOLD_MAX_ELEMENTS}

    @staticmethod
    def _replace(model: onnx.ModelProto, values: dict[str, onnx.TensorProto]) -> PassResult:
        if not values:
            return PassResult(model, False)
        model.graph.initializer.extend(values.values())
        keep = [n for n in model.graph.node if not any(o in values for o in n.output)]
        removed = len(model.graph.node) - len(keep)
        del model.graph.node[:]
        model.graph.node.extend(keep)
        RemoveUnused().call(model)
        return PassResult(model, True, [f"folded {removed} constant nodes"])


def _batches(names: list[str], static: dict[str, list[int | None]], types: dict[str, int]) -> Iterator[list[str]]:
    """`names` in order, in runs of at most FOLD_BATCH_BYTES by their inferred sizes (unknown: alone)."""
    def nbytes(name: str) -> int:
        dims = static.get(name)
        if dims is None or None in dims:
            return FOLD_BATCH_BYTES
        return math.prod(int(d or 0) for d in dims) * helper.tensor_dtype_to_np_dtype(types[name]).itemsize

    return runs_within(names, nbytes, FOLD_BATCH_BYTES)


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


LAYERNORM_SINCE = 17


class FuseLayerNorm(Pass):
    """Each decomposed LayerNorm chain becomes one LayerNormalization (opset 17 on), in the chain's last
    node's place and under its name; below opset 17 the chains are only counted (kept as written)."""

    name = "fuse-layernorm"

    def call(self, model: onnx.ModelProto) -> PassResult:
        view = GraphView(model)
        static, types = _inferred(model)
        chains = find_layernorm_chains(view, lambda t: len(static[t]) if t in static else None)
        if not chains:
            return PassResult(model, False)
        if view.opset < LAYERNORM_SINCE:
            return PassResult(model, False, [f"{len(chains)} LayerNorm chains recognised (opset {view.opset} has no "
                                             f"LayerNormalization: kept as written, analysed as one norm each)"])
        fused = [n for n in (self._fused(model, view, c, static, types) for c in chains) if n is not None]
        if not fused:
            return PassResult(model, False)
        replaced = {name: node for node, chain in fused for name in chain.nodes}
        keep = []
        for node in model.graph.node:
            if node.name not in replaced:
                keep.append(node)
            elif replaced[node.name].name == node.name:  # the chain's last node: the fused one takes its place
                keep.append(replaced[node.name])
        del model.graph.node[:]
        model.graph.node.extend(keep)
        RemoveUnused().call(model)
        return PassResult(model, True, [f"{len(fused)} LayerNorm chains fused into LayerNormalization"])

    @staticmethod
    def _fused(model: onnx.ModelProto, view: GraphView, chain: LayerNormChain,
               static: dict[str, list[int | None]], types: dict[str, int]) -> tuple[onnx.NodeProto, LayerNormChain] | None:
        hidden = (static.get(chain.input) or [None])[-1]
        params = []
        for found, fill in ((chain.scale, 1.0), (chain.bias, 0.0)):
            if found is not None:
                value = view.array(found[0])
                if value.ndim != 1:  # [1, 1, H] -> [H]: LayerNormalization's scale spans the normalised axis
                    name = f"{found[0]}__layernorm"
                    model.graph.initializer.append(numpy_helper.from_array(value.reshape(-1), name))
                    params.append(name)
                else:
                    params.append(found[0])
            elif fill == 1.0:  # the scale is required
                if hidden is None:
                    return None
                dtype = helper.tensor_dtype_to_np_dtype(types.get(chain.input, onnx.TensorProto.FLOAT))
                name = f"{chain.nodes[-1]}__layernorm_scale"
                model.graph.initializer.append(numpy_helper.from_array(np.ones(hidden, dtype=dtype), name))
                params.append(name)
        node = helper.make_node("LayerNormalization", [chain.input, *params], [chain.output], name=chain.nodes[-1],
                                axis=-1, epsilon=chain.epsilon)
        return node, chain


class Normalize(Pass):
    """The whole normalisation, on a copy: the caller's model is never modified."""

    name = "normalize"

    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnxprune.passes.base import PassManager

        m = copy.deepcopy(model)
        result = PassManager([ConstantsToInitializers(), WeightsNotInputs(), FoldConstants(), NameNodes(),
                                     OwnShapeTargets()],
                             steps=4)(m)
        fused = PassManager([FuseLayerNorm()])(result.model)  # once, on the folded model
        return PassResult(fused.model, result.modified or fused.modified, result.notes + fused.notes)
