"""Where Q/DQ goes: which nodes stay FP32 (kept by pattern, score heads) and TensorRT's residual Adds.

Score heads: a detector decides on `sigmoid(logit) >= threshold`, and the layers producing those
logits (found as `onnxprune.recovery.heads` finds them, by channel id through Concat/Reshape/Split)
carry the whole decision in a few values near the threshold, where INT8 steps move boxes across it.
They stay FP32, with every node between them and their final Sigmoid.

TensorRT placement (what its developer guide recommends and NVIDIA ModelOpt does): Q/DQ on the
inputs of weighted layers only, never on their outputs, so Conv + bias + activation fuse; a residual
Add gets Q/DQ on its *skip* input only, so TensorRT fuses the Add into the epilogue of the Conv on
the other (main) branch. ONNX Runtime's quantizer puts Q/DQ on both Add inputs; `unquantize_inputs`
then takes it off the main branch.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx

from onnxprune.deploy.qdq import WEIGHTED_OPS, Producers
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import dependency_graph
from onnxprune.io.types import Shapes
from onnxprune.recovery.heads import final_sigmoids, logit_mask, logit_roots

# Between a Conv and the tensor it hands on, ops TensorRT fuses into the Conv (bias, BN, activation).
FUSIBLE_EPILOGUE = frozenset({"Relu", "BatchNormalization", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid",
                              "HardSwish", "Tanh", "Elu", "Selu", "Softplus"})
CONV_OPS = frozenset({"Conv", "ConvTranspose"})


def keep_nodes(model: onnx.ModelProto, patterns: Sequence[str]) -> dict[str, str]:
    """Node name -> reason for nodes matching a `--keep` fnmatch pattern; a pattern matching nothing is an error."""
    out: dict[str, str] = {}
    names = [n.name for n in model.graph.node]
    for p in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, p)]
        if not hits:
            raise OnnxPruneError(f"--keep {p!r} matches no node (node names are listed by `onnxprune inspect`)")
        out.update({n: f"kept FP32: matches --keep {p!r}" for n in hits if n not in out})
    return out


def _descendants(view: Producers, starts: Iterable[str]) -> set[str]:
    """Names of nodes reachable downstream of the nodes named `starts` (inclusive)."""
    by_name = {n.name: n for n in view.model.graph.node}
    seen: set[str] = set()
    todo = deque(s for s in starts if s in by_name)
    while todo:
        name = todo.popleft()
        if name in seen:
            continue
        seen.add(name)
        for out in by_name[name].output:
            todo.extend(r.name for r in view.readers.get(out, []))
    return seen


def _ancestors(view: Producers, starts: Iterable[onnx.NodeProto]) -> set[str]:
    seen: set[str] = set()
    todo = deque(starts)
    while todo:
        node = todo.popleft()
        if node.name in seen:
            continue
        seen.add(node.name)
        todo.extend(p for x in node.input if (p := view.producer(x)) is not None)
    return seen


def score_head_nodes(model: onnx.ModelProto, *, shapes: Shapes | None = None) -> dict[str, str]:
    """Node name -> reason for a detector's score heads: the layers producing a final Sigmoid's logits,
    the Sigmoid, and every node between them. `model` must be normalised (named nodes, initializer weights)."""
    sigmoids = final_sigmoids(model)
    if not sigmoids:
        return {}
    dg = dependency_graph(model, shapes=shapes)
    roots = logit_roots(dg)
    heads = [n.name for n in dg.model.graph.node
             if n.op_type in WEIGHTED_OPS and roots.size and logit_mask(dg, n, roots) is not None]
    if not heads:
        return {}
    view = Producers(model)
    path = _descendants(view, heads) & _ancestors(view, sigmoids)
    return {name: "kept FP32: score head (logits of a final Sigmoid); --quantize-heads to quantize it"
            for name in sorted(path)}


def fusible_conv(view: Producers, tensor: str) -> onnx.NodeProto | None:
    """The Conv whose output reaches `tensor` through ops TensorRT fuses into it (bias, BN, activation, SiLU)."""
    node = view.producer(tensor)
    for _ in range(8):
        if node is None:
            return None
        if node.op_type in CONV_OPS:
            return node
        if node.op_type in FUSIBLE_EPILOGUE:
            node = view.producer(node.input[0])
        elif node.op_type in ("Mul", "Add") and len(node.input) == 2:
            # SiLU: Mul(x, Sigmoid(x)); bias or scale: one constant input.
            a, b = node.input
            pa, pb = view.producer(a), view.producer(b)
            if pb is not None and pb.op_type == "Sigmoid" and pb.input[0] == a:
                node = pa
            elif pa is not None and pa.op_type == "Sigmoid" and pa.input[0] == b:
                node = pb
            elif b in view.inits:
                node = pa
            elif a in view.inits:
                node = pb
            else:
                return None
        else:
            return None
    return None


def _depths(view: Producers, tensor: str) -> dict[str, int]:
    """Producer-hops from `tensor` back to every upstream tensor (breadth first: the shortest)."""
    out = {tensor: 0}
    todo = deque([tensor])
    while todo:
        t = todo.popleft()
        p = view.producer(t)
        if p is None:
            continue
        for x in p.input:
            if x and x not in out:
                out[x] = out[t] + 1
                todo.append(x)
    return out


@dataclass(frozen=True)
class ResidualAdd:
    node: str
    main: str  # the input from the Conv branch TensorRT fuses the Add into: no Q/DQ
    skip: str  # the residual input: Q/DQ


def residual_adds(model: onnx.ModelProto) -> list[ResidualAdd]:
    """Adds of two computed tensors where one comes from a fusible Conv (ModelOpt's rule).

    When both do (a projection shortcut), the main branch is the one farther from their lowest
    common ancestor; the shortcut Conv's output then gets the Q/DQ.
    """
    view = Producers(model)
    out: list[ResidualAdd] = []
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        a, b = node.input
        if a in view.inits or b in view.inits or view.producer(a) is None or view.producer(b) is None:
            continue
        ca, cb = fusible_conv(view, a), fusible_conv(view, b)
        if ca is None and cb is None:
            continue
        if ca is not None and cb is not None:
            da, db = _depths(view, a), _depths(view, b)
            common = set(da) & set(db)
            if not common:
                continue
            lca = min(common, key=lambda t: da[t] + db[t])
            main_is_a = da[lca] >= db[lca]
        else:
            main_is_a = ca is not None
        main, skip = (a, b) if main_is_a else (b, a)
        conv = ca if main_is_a else cb
        # The Conv's output must feed nothing else, or the fused Add would change what those readers see.
        if conv is not None and len(view.readers.get(conv.output[0], [])) == 1:
            out.append(ResidualAdd(node.name, main, skip))
    return out


def unquantize_inputs(model: onnx.ModelProto, inputs: Mapping[str, str]) -> int:
    """Feed node `name` its FP32 tensor instead of the DequantizeLinear output on input `tensor`
    (inputs: node name -> original tensor name), then drop Q/DQ nodes nobody reads. In place; returns
    the number of inputs rewired."""
    view = Producers(model)
    changed = 0
    for node in model.graph.node:
        tensor = inputs.get(node.name)
        if tensor is None:
            continue
        for i, x in enumerate(node.input):
            dq = view.dequantized(x)
            q = view.producer(dq.input[0]) if dq is not None else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] == tensor:
                node.input[i] = tensor
                changed += 1
    if changed:
        drop_dead_qdq(model)
    return changed


def drop_dead_qdq(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads (repeatedly), then their unused initializers."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    freed: set[str] = set()
    while True:
        read = {x for n in graph.node for x in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            freed.update(n.input)
            graph.node.remove(n)
    read = {x for n in graph.node for x in n.input} | outputs
    for t in [t for t in graph.initializer if t.name in freed and t.name not in read]:
        graph.initializer.remove(t)
