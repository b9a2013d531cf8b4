"""Rotate the hidden width before slicing it (`--approximate rotate`): SliceGPT's computational invariance.

An RMSNorm without its scale commutes with an orthogonal Q (||xQ|| = ||x||), so a residual stream x can
be carried as xQ: the embedding table's columns, every writer's output channels and every additive
bias on the stream are multiplied by Q, every reader's input channels by Qᵀ (all the same product along
the hidden axis), after each norm's scale is folded into the readers of its output. The rotated model
computes what the original does (to float rounding). With Q the eigenvectors of the stream's
uncentred covariance on calibration data, largest first, slicing the hidden width removes its weakest
directions instead of whole channels; the slots' scores are the eigenvalues (pipeline/stages.py).
One Q serves the whole stream (every layer), so no extra matrices enter the residual path.

Only a stream whose every reader is an RMSNorm (also ORT's SkipSimplifiedLayerNormalization, whose
bias is carried like a residual bias), a MatMul with a constant weight, a residual Add, a Cast or a
Shape read is rotated; anything else (a gating Mul, an activation on the stream, a LayerNorm's mean) is not
invariant under Q: that group is left unrotated and the reason noted (it is still sliced, as `rmsnorm`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.graph.context import ROLE_NORM_SCALE, ROLE_PARAM, ROLE_WEIGHT_IN, ROLE_WEIGHT_OUT, ConstMember
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.layernorm_chains import find_norm_chains
from onnxprune.graph.tracks import map_roots
from onnxprune.graph.view import GraphView
from onnxprune.io import runtime
from onnxprune.io.types import Shapes

SKIP_RMS = "SkipSimplifiedLayerNormalization"  # ONNX Runtime's: RMSNorm of input + skip (+ bias)
FUSED_RMS = ("RMSNormalization", "SimplifiedLayerNormalization", SKIP_RMS)
SKIP_SUM = 3  # SKIP_RMS's output input + skip + bias: the residual stream goes on
LINEAR_ROLES = (ROLE_WEIGHT_OUT, ROLE_WEIGHT_IN, ROLE_PARAM)


@dataclass
class Rotation:
    model: onnx.ModelProto  # the rotated model (the input model when nothing was rotated)
    # Sources of each rotated hidden group -> one score per slot (the variance along its direction).
    scores: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Stream:
    """One hidden group as the rotation sees it: positions are indices into `group.slots`."""

    group: Group
    members: dict[str, tuple[ConstMember, np.ndarray]]  # initializer -> (member, position of each entry)
    scales: list[tuple[ConstMember, np.ndarray, list[str]]]  # norm scale, positions, the weights it folds into
    tensors: dict[str, np.ndarray]  # residual-stream tensors read for the covariance -> positions


def rotate_hidden(dg: DependencyGraph, *, calibration: CalibrationLike, shapes: Shapes | None = None) -> Rotation:
    """The rotated model and per-slot scores of every prunable hidden group that can be rotated."""
    streams: list[_Stream] = []
    notes: list[str] = []
    for g in dg.prunable:
        if g.kind != "hidden":
            continue
        found = _stream(dg, g)
        if isinstance(found, str):
            notes.append(f"rotate (approximate): hidden group {g.id} not rotated, sliced as rmsnorm: {found}")
        else:
            streams.append(found)
    if not streams:
        return Rotation(dg.model, {}, notes)
    covs = _covariances(dg.model, streams, calibration, shapes)
    model = copy.deepcopy(dg.model)
    values = {t.name: t for t in model.graph.initializer}
    out = Rotation(model, {}, notes)
    for s, cov in zip(streams, covs, strict=True):
        eig, vec = np.linalg.eigh(cov)
        order = np.argsort(eig)[::-1]
        _rotate(values, s, vec[:, order])
        out.scores[tuple(s.group.sources)] = np.maximum(eig[order], 0.0)
        kept = np.cumsum(eig[order]) / max(float(eig.sum()), 1e-30)
        half = int(np.searchsorted(kept, 0.99)) + 1
        notes.append(f"rotate (approximate): hidden group {s.group.id} ({s.group.size} wide) rotated by the PCA "
                     f"of {len(s.tensors)} residual-stream tensors; {half} directions hold 99% of its variance")
    return out


def _positions(dg: DependencyGraph, g: Group, ids: np.ndarray) -> np.ndarray | None:
    """Index into g.slots of each entry of `ids` (None when one is not a slot of g)."""
    where = {int(r): i for i, r in enumerate(g.slots.tolist())}
    roots = map_roots(dg.analysis.roots, ids).reshape(-1).tolist()
    pos = [where.get(int(r), -1) for r in roots]
    return None if -1 in pos else np.array(pos, dtype=np.int64)


def _stream(dg: DependencyGraph, g: Group) -> _Stream | str:
    """The group's members, norm scales and stream tensors, or why a rotation would change the model."""
    an, view = dg.analysis, dg.analysis.view
    slots = set(g.slots.tolist())
    chains = [c for c in find_norm_chains(view, lambda t: len(view.shape(t) or ()) or None) if not c.centered]
    norm_nodes = {n for c in chains for n in c.nodes}
    norm_nodes |= {n.name for n in view.graph.node if n.op_type in FUSED_RMS}
    members: dict[str, tuple[ConstMember, np.ndarray]] = {}
    scales: list[tuple[ConstMember, np.ndarray]] = []
    holders: dict[str, set[str]] = {}  # initializer -> the nodes that hold it as a member of this group
    for m in an.members:
        if not set(map_roots(an.roots, m.track.ids).reshape(-1).tolist()) & slots:
            continue
        pos = _positions(dg, g, m.track.ids)
        if pos is None or len(m.track.axes) != 1:
            return f"constant {m.name} holds the hidden channels with others"
        if m.role == ROLE_NORM_SCALE and m.node in norm_nodes:
            scales.append((m, pos))
        elif m.role not in LINEAR_ROLES or m.role == ROLE_PARAM and _op(dg, m.node) not in ("Add", SKIP_RMS):
            return f"constant {m.name} of {_op(dg, m.node)} '{m.node}' scales the hidden channels one by one"
        elif m.name in members and not np.array_equal(members[m.name][1], pos):
            return f"constant {m.name} is shared along different orders of the hidden channels"
        else:
            members[m.name] = (m, pos)
        holders.setdefault(m.name, set()).add(m.node)
    for name in members:
        others = {n.name for n, _ in view.consumers.get(name, [])} - holders[name]
        if others:
            return f"constant {name} is also read by '{sorted(others)[0]}', which the rotation would change"
    hidden: dict[str, np.ndarray] = {}
    for t, layout in an.layouts.items():
        for tr in layout:
            if set(map_roots(an.roots, tr.ids).reshape(-1).tolist()) & slots:
                pos = _positions(dg, g, tr.ids)
                if pos is None or tr.axes != (len(view.shape(t) or ()) - 1,):
                    return f"tensor {t} holds the hidden channels off its last axis or with others"
                hidden[t] = pos
    readers = {n for name, (m, _) in members.items() if m.role == ROLE_WEIGHT_IN for n in holders[name]}
    for t in hidden:
        for node, i in view.consumers.get(t, []):
            ok = node.name in norm_nodes or node.op_type == "Shape" or \
                node.op_type in ("Cast", "Identity") and node.output[0] in hidden or \
                node.op_type == "MatMul" and i == 0 and node.name in readers or \
                node.op_type == "Add" and (node.input[1 - i] in hidden or node.input[1 - i] in members)
            if not ok:
                return f"{node.op_type} '{node.name}' reads the hidden channels and does not commute with a rotation"
    folded = []
    for m, pos in scales:
        node = next(n for n in view.graph.node if n.name == m.node)
        into = [c.input[1] for c, _ in view.consumers.get(node.output[0], []) if c.op_type != "Shape"]
        if not all(w in members and members[w][0].role == ROLE_WEIGHT_IN and len(holders[w]) == 1 for w in into):
            return f"the output of norm '{m.node}' is read by more than MatMuls with constant weights"
        folded.append((m, pos, into))
    stream = {t: pos for t, pos in hidden.items() if _residual(view, t)}
    return _Stream(g, members, folded, stream)


def _op(dg: DependencyGraph, node: str) -> str:
    return next((n.op_type for n in dg.analysis.view.graph.node if n.name == node), "?")


def _residual(view: GraphView, t: str) -> bool:
    """A point of the residual stream: an embedding lookup or a sum of two activations (an Add, or
    the sum a skip norm also returns)."""
    node = view.producer.get(t, (None,))[0]
    if node is None:
        return False
    if node.op_type == SKIP_RMS:
        return len(node.output) > SKIP_SUM and node.output[SKIP_SUM] == t
    return node.op_type == "Gather" or node.op_type == "Add" and not any(view.is_const(x) for x in node.input)


def _covariances(model: onnx.ModelProto, streams: list[_Stream], calibration: CalibrationLike,
                 shapes: Shapes | None) -> list[np.ndarray]:
    """Σ xᵀx over every calibration row of every stream tensor, in slot order, per stream."""
    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    wanted = sorted({t for s in streams for t in s.tensors} - known)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in wanted)
    sess = runtime.session(probe)
    covs = [np.zeros((s.group.size, s.group.size)) for s in streams]
    source = CalibrationSource.of(calibration, model, shapes=shapes)
    for feed in source.batches():
        outs = runtime.run(sess, feed)
        for s, cov in zip(streams, covs, strict=True):
            for t, pos in s.tensors.items():
                x = np.asarray(outs[t], dtype=np.float64).reshape(-1, pos.size)
                canon = np.zeros((x.shape[0], s.group.size))
                canon[:, pos] = x
                cov += canon.T @ canon
    return covs


def _rotate(values: dict[str, onnx.TensorProto], s: _Stream, q: np.ndarray) -> None:
    """Fold each norm scale into its readers, then carry every member along Q (in place)."""
    arrays = {name: numpy_helper.to_array(values[name]).astype(np.float64) for name in s.members}
    for m, pos, into in s.scales:
        scale = np.zeros(s.group.size)
        scale[pos] = numpy_helper.to_array(values[m.name]).reshape(-1)
        for w in into:
            member, wpos = s.members[w]
            shape = [1] * arrays[w].ndim
            shape[member.track.axes[0]] = -1
            arrays[w] = arrays[w] * scale[wpos].reshape(shape)
        _store(values, m.name, np.ones(values[m.name].dims, dtype=np.float64))
    for name, (m, pos) in s.members.items():
        axis = m.track.axes[0]
        moved = np.tensordot(np.moveaxis(arrays[name], axis, -1), q[np.ix_(pos, pos)], axes=([-1], [0]))
        _store(values, name, np.moveaxis(moved, -1, axis))


def _store(values: dict[str, onnx.TensorProto], name: str, value: np.ndarray) -> None:
    dtype = numpy_helper.to_array(values[name]).dtype
    values[name].CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
