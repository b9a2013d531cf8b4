"""One ONNX Runtime session that can silence any set of channel slots: masks as graph inputs.

Every consume edge that carries a prunable slot gets `Mul(tensor, mask_k)` in front of its
consumer, with `mask_k` a new graph input (1 on kept positions, 0 on removed ones). Masking at
the consume edges is exactly what removing the slots does (see verify.py), so one session and a
few held calibration batches measure the output error of any removal set without rebuilding.

fill="mean": a removed position reads its mean over the held batches instead of 0 (`Mul` then
`Add(fill_k)`, fill_k = (1 − mask_k)·mean). That is the error left after the cheapest recovery,
folding each removed channel's mean into the consumer's bias, which least-squares reconstruction
always does at least as well; zero-filling charges a channel for its mean, which recovery removes.

overrides: initializers (consumer weights and biases) that each run may replace, listed as graph
inputs; `scoring.refit_probe` feeds re-fitted consumer weights through them.

A run on the held feeds (`held_outputs`) computes only the nodes downstream of what it changes (the
masks of the removed slots' groups, the weights fed), starting from the dense values of the tensors
those nodes read; the outputs nothing changed are the dense ones. Groups measured in order get those
values from one dense pass cut in segments (calib.frontier, tensors kept up to `cut_bytes`); any other
removal from a dense run up to them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from onnxprune.calib.collect import prefix_model, reads, stream_tensors
from onnxprune.calib.frontier import Budget, Frontier, producers
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.context import ConsumeEdge
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.masking import mask_dtype, mask_shape, splice_masks
from onnxprune.graph.tracks import map_roots
from onnxprune.io import runtime
from onnxprune.io.types import Feed

FILLS = ("zero", "mean")
DEFAULT_CUT_BYTES = 512 << 20  # dense tensors kept for the suffix runs of `held_outputs`


@dataclass(frozen=True)
class Suffix:
    """The part of the probe model downstream of `sources`, fed the dense values of `cut`."""

    session: ort.InferenceSession | None  # None: no output depends on the sources
    outputs: list[str]
    cut: list[str]
    inputs: frozenset[str] = frozenset()  # the session's inputs (a fed weight its nodes do not read is left out)


class MaskProbe:
    """`error(removed_roots)`: relative output error of the model with those slots masked."""

    def __init__(self, dg: DependencyGraph, feeds: Iterable[Feed], *, fill: str = "zero",
                 overrides: Iterable[str] = (), cut_bytes: int = DEFAULT_CUT_BYTES) -> None:
        if fill not in FILLS:
            raise OnnxPruneError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
        live: set[int] = set()
        for g in dg.prunable:
            live.update(int(r) for r in g.slots)
        model = copy.deepcopy(dg.model)
        self.masks: list[tuple[str, np.ndarray, tuple[int, ...], np.dtype]] = []  # (input, roots, shape, dtype)
        self.fills: dict[str, tuple[str, np.ndarray]] = {}  # mask input -> (fill input, mean in the mask's shape)
        masked = []
        for k, e in enumerate(dg.analysis.consume_edges):
            roots = map_roots(dg.analysis.roots, e.track.ids)
            if not live & set(np.unique(roots[roots >= 0]).tolist()):
                continue
            name, shape, dtype = f"__probe_mask_{k}", mask_shape(dg, e), mask_dtype(dg, e)
            model.graph.input.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(dtype), list(shape)))
            masked.append((k, e, name))
            self.masks.append((name, roots, shape, dtype))
        self.feeds = [dict(f) for f in feeds]
        fill_names: dict[int, str] = {}
        if fill == "mean":
            means = edge_means(dg, [e for _, e, _ in masked], self.feeds)
            for (k, e, name), (_, _, shape, dtype) in zip(masked, self.masks, strict=True):
                if e.tensor in means:
                    fill_names[k] = f"__probe_fill_{k}"
                    model.graph.input.append(helper.make_tensor_value_info(
                        fill_names[k], helper.np_dtype_to_tensor_dtype(dtype), list(shape)))
                    self.fills[name] = (fill_names[k], means[e.tensor].reshape(shape).astype(dtype))
        splice_masks(model, masked, prefix="probe", fills=fill_names)
        inits = {t.name: t for t in model.graph.initializer}
        for name in dict.fromkeys(overrides):  # initializers listed as inputs: a feed replaces them
            t = inits[name]
            model.graph.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
        self.outputs = [o.name for o in model.graph.output]
        self.model, self.cut_bytes = model, cut_bytes
        self.session = runtime.session(model, optimize=True)
        self.evaluations = 0
        self.reference = [self._run(f, set()) for f in self.feeds]
        self._dense_masks = self._mask_feed(set())
        # per group, the mask (and fill) inputs that carry any of its slots
        self._group_inputs: list[set[str]] = []
        self._group_of: dict[int, int] = {}
        for gi, g in enumerate(dg.prunable):
            slots = np.asarray(g.slots, dtype=np.int64)
            self._group_of.update((int(r), gi) for r in slots)
            names = {name for name, roots, _, _ in self.masks if np.isin(roots, slots).any()}
            self._group_inputs.append(names | {self.fills[n][0] for n in names if n in self.fills})
        self._suffixes: dict[frozenset[str], Suffix] = {}
        self._cuts: dict[str, list[np.ndarray]] = {}  # dense value per held feed
        self._made = producers(model)
        cuts = [self._cut(frozenset(names))[1] for names in self._group_inputs]
        self._dense = Frontier(model, [{**f, **self._dense_masks} for f in self.feeds], cuts, {}, Budget(cut_bytes),
                               optimize=True)

    def _mask_feed(self, removed: set[int]) -> dict[str, np.ndarray]:
        arr = np.array(sorted(removed), dtype=np.int64)
        out = {}
        for name, roots, shape, dtype in self.masks:
            keep = (~np.isin(roots, arr) | (roots < 0)).reshape(shape)
            out[name] = keep.astype(dtype)
            if name in self.fills:
                fill_name, mean = self.fills[name]
                out[fill_name] = np.where(keep, 0, mean).astype(dtype)
        return out

    def _run(self, feed: Feed, removed: set[int], weights: Mapping[str, np.ndarray] | None = None,
             ) -> dict[str, np.ndarray]:
        """weights: values for initializers named in `overrides` (the others keep theirs)."""
        return runtime.run(self.session, {**feed, **self._mask_feed(removed), **(weights or {})}, self.outputs)

    def held_outputs(self, removed: set[int], weights: Mapping[str, np.ndarray] | None = None,
                     ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Per held feed, (dense outputs, outputs with `removed` masked and `weights` fed)."""
        sources = frozenset(n for r in removed if int(r) in self._group_of
                            for n in self._group_inputs[self._group_of[int(r)]]) | frozenset(weights or {})
        suffix = self._suffix(sources)
        masks = self._mask_feed(removed)
        for i, (feed, want) in enumerate(zip(self.feeds, self.reference, strict=True)):
            got = dict(want)
            if suffix.session is not None:
                run = {**feed, **masks, **(weights or {}), **{c: self._cuts[c][i] for c in suffix.cut}}
                got.update(runtime.run(suffix.session, {k: v for k, v in run.items() if k in suffix.inputs},
                                       suffix.outputs))
            yield want, got

    def _suffix(self, sources: frozenset[str]) -> Suffix:
        if sources in self._suffixes:
            return self._suffixes[sources]
        outputs, cut = self._cut(sources)
        groups = {gi for gi, names in enumerate(self._group_inputs) if names & sources}
        self._dense_cut(cut, min(groups) if len(groups) == 1 else None)
        types = {c: helper.np_dtype_to_tensor_dtype(self._cuts[c][0].dtype) for c in cut}
        session = runtime.session(prefix_model(self.model, outputs, start=types), optimize=True) if outputs else None
        inputs = frozenset(i.name for i in [*session.get_inputs(), *session.get_overridable_initializers()]
                           ) if session is not None else frozenset()
        self._suffixes = {sources: Suffix(session, outputs, cut, inputs)}  # one group at a time is measured
        return self._suffixes[sources]

    def _cut(self, sources: frozenset[str]) -> tuple[list[str], list[str]]:
        """(outputs, cut): the graph outputs that depend on `sources`, and the tensors made upstream
        of them that the nodes in between read."""
        tainted = set(sources)
        nodes: list[onnx.NodeProto] = []
        for node in self.model.graph.node:
            if any(x in tainted for x in reads(node)):
                nodes.append(node)
                tainted.update(o for o in node.output if o)
        outputs = [o for o in self.outputs if o in tainted]
        cut = sorted({x for n in nodes for x in reads(n) if x not in tainted and x in self._made}) if outputs else []
        return outputs, cut

    def _dense_cut(self, cut: list[str], group: int | None) -> None:
        """Dense values of `cut` for every held feed (those of earlier cuts are dropped): from the
        dense pass when `group` is next in it, else from a run up to them."""
        if group is not None and group >= self._dense.passes:
            while self._dense.passes <= group:
                k = self._dense.passes
                values = list(self._dense.run(self.model))
            self._cuts = {c: [v[c] for v in values] for c in self._dense.requests[k]}
        self._cuts = {c: v for c, v in self._cuts.items() if c in cut}
        missing = [c for c in cut if c not in self._cuts]
        if not missing:
            return
        session = runtime.session(prefix_model(self.model, missing), optimize=True)
        values = [runtime.run(session, {**feed, **self._dense_masks}, missing) for feed in self.feeds]
        self._cuts.update((c, [v[c] for v in values]) for c in missing)

    def error(self, removed: set[int]) -> float:
        """Σ over float outputs of ‖y − y_ref‖ / ‖y_ref‖ over all held batches."""
        self.evaluations += 1
        diff: dict[str, float] = {}
        ref: dict[str, float] = {}
        for want, got in self.held_outputs(removed):
            for name, w in want.items():
                if w.dtype.kind != "f":
                    continue
                d = got[name].astype(np.float64) - w
                diff[name] = diff.get(name, 0.0) + float(np.sum(d * d))
                ref[name] = ref.get(name, 0.0) + float(np.sum(w.astype(np.float64) ** 2))
        return float(sum(np.sqrt(diff[n]) / max(np.sqrt(ref[n]), 1e-12) for n in diff))


def edge_means(dg: DependencyGraph, edges: Iterable[ConsumeEdge], feeds: Iterable[Feed]) -> dict[str, np.ndarray]:
    """Per float tensor of `edges`: its mean over the feeds along every axis its mask broadcasts on."""
    shapes: dict[str, tuple[int, ...]] = {}
    for e in edges:
        if dg.analysis.view.dtypes.get(e.tensor, np.dtype(np.float32)).kind == "f":
            shapes.setdefault(e.tensor, mask_shape(dg, e))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for vals in stream_tensors(dg.model, list(shapes), feeds):
        for name, shape in shapes.items():
            v = np.asarray(vals[name], dtype=np.float64)
            axes = tuple(i for i, d in enumerate(shape) if d == 1)
            sums[name] = sums.get(name, 0.0) + v.sum(axis=axes, keepdims=True)
            counts[name] = counts.get(name, 0) + int(np.prod([v.shape[i] for i in axes]))
    return {n: sums[n] / max(counts[n], 1) for n in sums}
