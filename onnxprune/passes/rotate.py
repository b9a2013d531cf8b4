"""Rotate the hidden width before slicing it (`--approximate rotate`): SliceGPT's computational invariance.

An RMSNorm without its scale commutes with an orthogonal Q (||xQ|| = ||x||), so a residual stream x can
be carried as xQ: the embedding table's columns, every writer's output channels and every additive
bias on the stream are multiplied by Q, every reader's input channels by Qᵀ (all the same product along
the hidden axis), after each norm's scale is folded into the readers of its output. The rotated model
computes what the original does (to float rounding). With Q the eigenvectors of the stream's
uncentred covariance on calibration data, largest first, slicing the hidden width removes its weakest
directions instead of whole channels; the slots' scores are the eigenvalues (pipeline/stages.py).
One Q serves the whole stream (every layer), so no extra matrices enter the residual path.

Only a stream that every op it passes through commutes with is rotated (passes/hidden_stream.py: RMSNorms,
also ORT's SkipSimplifiedLayerNormalization, whose bias is carried like a residual bias; MatMuls and Gemms
with a constant weight; residual Adds; data moves; Shape reads); anything else (a gating Mul, an activation
on the stream) is not invariant under Q: that group is left unrotated and the reason noted (it is still
sliced, as `rmsnorm`). A pre-LN LayerNorm stream is first made such a stream by passes/centre.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io import runtime
from onnxprune.io.types import Shapes
from onnxprune.passes.hidden_stream import Stream, find_stream, store


@dataclass
class Rotation:
    model: onnx.ModelProto  # the rotated model (the input model when nothing was rotated)
    # Sources of each rotated hidden group -> one score per slot (the variance along its direction).
    scores: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def group_scores(self, dg: DependencyGraph) -> dict[int, np.ndarray]:
        """The rotated groups of `dg` (the rotated model's analysis) by id, each slot scored by its variance:
        a rotated stream loses its weakest directions first, whatever the criterion."""
        out: dict[int, np.ndarray] = {}
        for g in dg.groups:
            variance = self.scores.get(tuple(g.sources))
            if variance is not None and variance.size == g.size:
                out[g.id] = variance
        return out


def rotate_hidden(dg: DependencyGraph, *, calibration: CalibrationLike, shapes: Shapes | None = None) -> Rotation:
    """The rotated model and per-slot scores of every prunable hidden group that can be rotated."""
    streams: list[Stream] = []
    notes: list[str] = []
    for g in dg.prunable:
        if g.kind != "hidden":
            continue
        found = find_stream(dg, g)
        if found is None:
            continue
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


def _covariances(model: onnx.ModelProto, streams: list[Stream], calibration: CalibrationLike,
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


def _rotate(values: dict[str, onnx.TensorProto], s: Stream, q: np.ndarray) -> None:
    """Fold each norm scale into its readers, then carry every member along Q (in place)."""
    arrays = {name: numpy_helper.to_array(values[name]).astype(np.float64) for name in s.members}
    scales = {norm.scale: s.in_slots(values, norm.scale) for norm in s.norms if norm.scale is not None}
    for norm in s.norms:  # a scale shared by norms is read for all before any is set to ones
        if norm.scale is None:
            continue
        scale = scales[norm.scale]
        for reader in norm.readers:
            w = reader.input[1]
            member, wpos = s.members[w]
            shape = [1] * arrays[w].ndim
            shape[member.track.axes[0]] = -1
            arrays[w] = arrays[w] * scale[wpos].reshape(shape)
        store(values, norm.scale, np.ones(values[norm.scale].dims, dtype=np.float64))
    for name, (m, pos) in s.members.items():
        axis = m.track.axes[0]
        moved = np.tensordot(np.moveaxis(arrays[name], axis, -1), q[np.ix_(pos, pos)], axes=([-1], [0]))
        store(values, name, np.moveaxis(moved, -1, axis))
