"""One hidden group's residual stream as a transform along the hidden axis sees it: the constants that
write and read it, the norms that read it (and the linear layers reading each norm), and the tensors
that hold it; or why such a transform would change the model.

Two transforms use it: the rotation (passes/rotate.py, on streams read by RMSNorms) and the centring
that first turns a pre-LN LayerNorm stream into one (passes/centre.py, `centred=True`). Both multiply
every member along the hidden axis by one matrix, so every op the stream passes through must commute
with it: residual Adds, ops that only move data (a Reshape, a Transpose, a Gather on the token axis, a
Concat of the CLS token and the patches), Shape reads, the norms, and the linear layers reading a norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.graph.context import ROLE_NORM_SCALE, ROLE_PARAM, ROLE_WEIGHT_IN, ROLE_WEIGHT_OUT, ConstMember
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.layernorm_chains import find_norm_chains
from onnxprune.graph.rules.norm import DEFAULT_EPSILON
from onnxprune.graph.tracks import map_roots
from onnxprune.graph.view import GraphView, node_attr

SKIP_RMS = "SkipSimplifiedLayerNormalization"  # ONNX Runtime's: RMSNorm of input + skip (+ bias)
SKIP_LN = "SkipLayerNormalization"  # ONNX Runtime's LayerNorm of input + skip (+ bias): SKIP_RMS with a mean
FUSED_RMS = ("RMSNormalization", "SimplifiedLayerNormalization", SKIP_RMS)
SKIP_SUM = 3  # the skip norms' output input + skip + bias: the residual stream goes on
LINEAR_ROLES = (ROLE_WEIGHT_OUT, ROLE_WEIGHT_IN, ROLE_PARAM)
# A per-channel constant of these ops is a piece of the stream's value (a bias, the CLS token), not a scale.
ADDITIVE = ("Add", SKIP_RMS, SKIP_LN, "Conv", "Gemm", "Expand", "Concat")
# Ops that move data without mixing or scaling channels (when the hidden channels stay one axis of the output).
MOVERS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Gather", "Slice", "Identity", "Cast", "Expand")
READERS = ("MatMul", "Gemm")
LAYERNORM_EPSILON = 1e-5  # ONNX's default
Members = dict[str, tuple[ConstMember, np.ndarray]]  # initializer -> (member, position of each entry)


@dataclass
class Norm:
    """A norm reading the stream: one op or a chain of ops (graph/layernorm_chains.py)."""

    nodes: tuple[str, ...]  # its node names (the last one writes `output`)
    input: str
    output: str
    scale: str | None  # constant gamma
    shift: str | None  # constant beta (a LayerNorm's)
    epsilon: float
    readers: list[onnx.NodeProto]  # the MatMuls / Gemms reading its output (through data moves)


@dataclass
class Stream:
    """One hidden group as a transform along its axis sees it: positions are indices into `group.slots`."""

    group: Group
    members: Members  # the writers' and readers' constants
    norms: list[Norm]
    norm_params: dict[str, np.ndarray]  # each norm's scale and shift -> positions
    tensors: dict[str, np.ndarray]  # residual-stream points (read for the covariance) -> positions

    def in_slots(self, values: dict[str, onnx.TensorProto], param: str) -> np.ndarray:
        """A norm's scale or shift, one value per slot of the group."""
        out = np.zeros(self.group.size)
        out[self.norm_params[param]] = numpy_helper.to_array(values[param]).reshape(-1)
        return out


def find_stream(dg: DependencyGraph, g: Group, *, centred: bool = False) -> Stream | str | None:
    """The stream of hidden group g read by RMSNorms (`centred`: by LayerNorms), or why a transform along
    its axis would change the model; None when `centred` and no LayerNorm reads it."""
    an, view = dg.analysis, dg.analysis.view
    hidden: dict[str, np.ndarray] = {}
    axis: dict[str, int] = {}
    for t, layout in an.layouts.items():
        for tr in layout:
            if _ours(dg, g, tr.ids):
                pos = _positions(dg, g, tr.ids)
                if pos is None or len(tr.axes) != 1:
                    return f"tensor {t} holds the hidden channels with others"
                hidden[t], axis[t] = pos, tr.axes[0]
    norms = _norms(view, centred=centred)
    by_node = {n: norm for norm in norms for n in norm.nodes}
    if centred and not any(norm.input in hidden for norm in norms):
        return None
    found = _members(dg, g, by_node, centred=centred)
    if isinstance(found, str):
        return found
    members, norm_params, holders = found
    for name in members:
        others = {n.name for n, _ in view.consumers.get(name, [])} - holders[name]
        if others:
            return f"constant {name} is also read by '{sorted(others)[0]}', which the rotation would change"
    for name in norm_params:  # the scale is folded away and the shift dropped: only norms may read them
        others = {n.name for n, _ in view.consumers.get(name, [])} - set(by_node)
        if others:
            return f"norm parameter {name} is also read by '{sorted(others)[0]}', which folding it would change"
    read_side: set[str] = set()  # tensors between a norm and its readers
    for norm in norms:
        if norm.input in hidden:
            why = _find_readers(view, norm, hidden, members, holders, read_side, centred=centred)
            if why is not None:
                return why
    used = [norm for norm in norms if norm.input in hidden]
    in_used = {n for norm in used for n in norm.nodes}
    for t in set(hidden) - read_side:
        for node, i in view.consumers.get(t, []):
            if node.name in in_used or node.op_type == "Shape":
                continue
            moved = node.output[0] in hidden and (
                node.op_type in MOVERS and i == 0 or
                node.op_type == "Concat" and all(x in hidden or _piece(view, x, members) for x in node.input) or
                node.op_type == "Add" and (node.input[1 - i] in hidden or node.input[1 - i] in members))
            direct = not centred and _reader(node, i, members, holders, alone=False)  # no scale to fold
            if not (moved or direct):
                return f"{node.op_type} '{node.name}' reads the hidden channels and does not commute with a rotation"
    stream = {t: pos for t, pos in hidden.items() if _residual(view, t)}
    for t in stream:
        if axis[t] != len(view.shape(t) or ()) - 1:  # the covariance reads rows of the last axis
            return f"residual-stream tensor {t} holds the hidden channels off its last axis"
    return Stream(g, members, used, norm_params, stream)


def _members(dg: DependencyGraph, g: Group, by_node: dict[str, Norm], *,
             centred: bool) -> tuple[Members, dict[str, np.ndarray], dict[str, set[str]]] | str:
    """g's constants: the writers' and readers' (with positions), the norms' scales and shifts, and the
    nodes holding each; or why one is not carried by a product along the hidden axis."""
    an = dg.analysis
    members: Members = {}
    norm_params: dict[str, np.ndarray] = {}
    holders: dict[str, set[str]] = {}  # initializer -> the nodes that hold it as a member of this group
    for m in an.members:
        if not _ours(dg, g, m.track.ids):
            continue
        pos = _positions(dg, g, m.track.ids)
        norm = by_node.get(m.node)
        if pos is None or len(m.track.axes) != 1:
            return f"constant {m.name} holds the hidden channels with others"
        if norm is not None and m.name in (norm.scale, norm.shift) and m.role in (ROLE_NORM_SCALE, ROLE_PARAM):
            norm_params[m.name] = pos
        elif m.role not in LINEAR_ROLES or m.role == ROLE_PARAM and _op(an.view, m.node) not in ADDITIVE:
            return f"constant {m.name} of {_op(an.view, m.node)} '{m.node}' scales the hidden channels one by one"
        elif m.name in members and not np.array_equal(members[m.name][1], pos):
            return f"constant {m.name} is shared along different orders of the hidden channels"
        elif centred and m.name in members and (members[m.name][0].role == ROLE_WEIGHT_IN) != (m.role == ROLE_WEIGHT_IN):
            return f"constant {m.name} both writes and reads the stream (tied), which centring its writers would change"
        else:
            members[m.name] = (m, pos)
        holders.setdefault(m.name, set()).add(m.node)
    return members, norm_params, holders


def _norms(view: GraphView, *, centred: bool) -> list[Norm]:
    """The norms over the last axis of the graph: LayerNorms when `centred`, else RMSNorms."""
    rank_of = lambda t: len(view.shape(t) or ()) or None  # noqa: E731
    out = [Norm(c.nodes, c.input, c.output, c.scale[0] if c.scale else None, c.bias[0] if c.bias else None,
                c.epsilon, []) for c in find_norm_chains(view, rank_of) if c.centered == centred]
    for node in view.graph.node:
        if centred and node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx"):
            rank = len(view.shape(node.input[0]) or ())
            axis = node_attr(node, "axis", -1)
            if (axis == -1 or axis == rank - 1) and not any(_read(view, o) for o in node.output[1:]):
                eps = float(node_attr(node, "epsilon", LAYERNORM_EPSILON))  # type: ignore[arg-type]
                out.append(Norm((node.name,), node.input[0], node.output[0], node.input[1],
                                node.input[2] if len(node.input) > 2 and node.input[2] else None, eps, []))
        elif centred and node.op_type == SKIP_LN and not any(_read(view, o) for o in node.output[1:SKIP_SUM]):
            eps = float(node_attr(node, "epsilon", DEFAULT_EPSILON[SKIP_LN]))  # type: ignore[arg-type]
            out.append(Norm((node.name,), node.input[0], node.output[0], node.input[2],
                            node.input[3] if len(node.input) > 3 and node.input[3] else None, eps, []))
        elif not centred and node.op_type in FUSED_RMS:
            scale = node.input[2] if node.op_type == SKIP_RMS else node.input[1]
            out.append(Norm((node.name,), node.input[0], node.output[0], scale, None, 0.0, []))
    return out


def _read(view: GraphView, t: str) -> bool:
    """Whether a norm's optional output (its mean, its inverse deviation) is used."""
    return bool(t) and (bool(view.consumers.get(t)) or t in view.graph_outputs)


def _find_readers(view: GraphView, norm: Norm, hidden: dict[str, np.ndarray],
                  members: Members, holders: dict[str, set[str]],
                  read_side: set[str], *, centred: bool) -> str | None:
    """Fills norm.readers with the linear layers reading its output (through data moves), or says why not."""
    todo = [norm.output]
    while todo:
        t = todo.pop()
        read_side.add(t)
        for node, i in view.consumers.get(t, []):
            if node.op_type == "Shape":
                continue
            if _reader(node, i, members, holders):
                norm.readers.append(node)
            elif node.op_type in MOVERS and i == 0 and node.output[0] in hidden:
                todo.append(node.output[0])
            elif centred and node.op_type == "Add" and node.output[0] in hidden:
                return (f"LayerNorm '{norm.nodes[-1]}' sits on the residual stream (post-LN: its output is the next "
                        f"residual Add '{node.name}''s input), so its scale and shift cannot be folded into readers")
            else:
                return (f"the output of norm '{norm.nodes[-1]}' is read by more than MatMuls with constant weights "
                        f"({node.op_type} '{node.name}')")
    return None


def _piece(view: GraphView, x: str, members: Members) -> bool:
    """A member of the stream, or one moved (the CLS token expanded to the batch)."""
    node = view.producer.get(x, (None,))[0]
    return x in members or node is not None and node.op_type in MOVERS and node.input[0] in members


def _reader(node: onnx.NodeProto, i: int, members: Members, holders: dict[str, set[str]], *,
            alone: bool = True) -> bool:
    """A MatMul or Gemm reading the stream as its input 0 through a constant weight (held by it alone:
    a norm's scale and shift are folded into it, and a tied reader may read another norm)."""
    if node.op_type not in READERS or i != 0 or len(node.input) < 2 or node_attr(node, "transA", 0):
        return False
    w = node.input[1]
    return w in members and members[w][0].role == ROLE_WEIGHT_IN and (not alone or holders[w] == {node.name})


def _ours(dg: DependencyGraph, g: Group, ids: np.ndarray) -> bool:
    return bool(set(map_roots(dg.analysis.roots, ids).reshape(-1).tolist()) & set(g.slots.tolist()))


def _positions(dg: DependencyGraph, g: Group, ids: np.ndarray) -> np.ndarray | None:
    """Index into g.slots of each entry of `ids` (None unless they are every slot of g, once each)."""
    where = {int(r): i for i, r in enumerate(g.slots.tolist())}
    roots = map_roots(dg.analysis.roots, ids).reshape(-1).tolist()
    pos = [where.get(int(r), -1) for r in roots]
    return np.array(pos, dtype=np.int64) if sorted(pos) == list(range(g.size)) else None


def _op(view: GraphView, node: str) -> str:
    return next((n.op_type for n in view.graph.node if n.name == node), "?")


def _residual(view: GraphView, t: str) -> bool:
    """A point of the residual stream: an embedding lookup or a sum of two activations (an Add, or
    the sum a skip norm also returns)."""
    node = view.producer.get(t, (None,))[0]
    if node is None:
        return False
    if node.op_type in (SKIP_RMS, SKIP_LN):
        return len(node.output) > SKIP_SUM and node.output[SKIP_SUM] == t
    return node.op_type == "Gather" and view.is_const(node.input[0]) or \
        node.op_type == "Add" and not any(view.is_const(x) for x in node.input)


def store(values: dict[str, onnx.TensorProto], name: str, value: np.ndarray) -> None:
    """Replace initializer `name` by `value`, in its own dtype."""
    dtype = numpy_helper.to_array(values[name]).dtype
    values[name].CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
