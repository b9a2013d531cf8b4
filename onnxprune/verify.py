"""The correctness oracle: removing channels equals masking them at the consumer edges.

Removing a set of channel slots must give the same outputs as the *original* graph with a 0/1
mask multiplied in on the channel axes wherever those channels enter a channel-mixing consumer
(Conv/Gemm/MatMul reduction inputs, channel sums, recurrent inputs). Every op between a producer
and those edges works channel by channel, so this is exact whatever the activations do at 0.

The comparison means something only where the reference is finite: a NaN or inf hides any
difference behind it (invalid inputs do that, e.g. an attention mask of 3 in `(1 - mask) * min`).
So a non-finite value in the pruned output is an infinite error. Where the masked reference is not
finite, the original is run too: if it is finite, removing the channels broke the model (an
infinite error); if not, that feed cannot tell anything, and with nothing else to compare the
answer is "cannot verify" (give real inputs with --calib), never a pass.

Real feeds (a few calibration samples) are compared first. The random feeds (valid values inferred
from the graph, `inputs.random_inputs`) are compared as well, since random activations reach
channels that real data may leave near zero; they are skipped only where the original gives NaN or
inf on them while it is finite on the real ones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.masking import mask_dtype, mask_shape, splice_masks
from onnxprune.io.inputs import describe_feeds, feed_shapes, random_inputs
from onnxprune.io.runtime import InferenceSession, run, session
from onnxprune.io.types import Feed, Shapes

DEFAULT_RTOL = 1e-4
ABS_FLOOR = 1e-6  # float32 noise on outputs that are ~0 everywhere (saturated sigmoids)
# Heads that squash the signal: the oracle also compares the tensor that enters them.
SQUASHING = {"Sigmoid", "Softmax", "LogSoftmax", "HardSigmoid", "Tanh", "Clip", "Relu", "Identity", "Cast",
             "Softplus", "Exp"}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    max_rel_error: float
    per_output: dict[str, float]
    masked_edges: int
    samples: int  # feeds compared
    inputs: str = ""  # what they were: "4 calibration samples and 2 random inputs (input_ids: index below 300)"
    unverifiable: str | None = None  # why nothing could be compared (then ok is False)
    # Removed slots of approximate groups: outside the proof (ok speaks for the exact groups only).
    unproven: int = 0

    def describe(self) -> str:
        if self.unverifiable is not None:
            return f"cannot verify: {self.unverifiable}"
        state = "PASS" if self.ok else "FAIL"
        scope = "" if not self.unproven else \
            f" (exact groups only: {self.unproven} removed slots of approximate groups are not proven)"
        return (f"verify {state}{scope}: max relative error {self.max_rel_error:.2e} over {len(self.per_output)} "
                f"tensors, {self.inputs}, {self.masked_edges} masked consumer edges")

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "max_rel_error": self.max_rel_error, "inputs": self.inputs,
                "samples": self.samples, "cannot_verify": self.unverifiable, "approximate_slots_unproven": self.unproven}


def masked_model(dg: DependencyGraph, removed_roots: set[int]) -> tuple[onnx.ModelProto, int]:
    """The analysed model with a 0/1 mask at every consumer edge of the removed channels."""
    m = copy.deepcopy(dg.model)
    actx = ApplyContext(m, dg.analysis.roots, removed_roots)
    masked = []
    for k, edge in enumerate(dg.analysis.consume_edges):
        keep = actx.keep(edge.track.ids)
        if keep.all():
            continue
        name = f"__oracle_mask_{k}"
        m.graph.initializer.append(numpy_helper.from_array(
            keep.astype(mask_dtype(dg, edge)).reshape(mask_shape(dg, edge)), name))
        masked.append((k, edge, name))
    splice_masks(m, masked, prefix="oracle")
    return m, len(masked)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| relative to max|b|, with differences below ABS_FLOOR counted as 0; infinite where
    either holds a NaN or inf (equal non-finite values hide the differences that made them)."""
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind not in "fc":
        return 0.0 if np.array_equal(a, b) else float("inf")
    if not a.size:
        return 0.0
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    if diff <= ABS_FLOOR:
        return 0.0
    return diff / max(float(np.max(np.abs(b))), ABS_FLOOR)


def compared_tensors(model: onnx.ModelProto) -> list[str]:
    """Graph outputs, plus the tensor entering each squashing head (Sigmoid/Softmax...) before them.

    On random inputs a sigmoid head is often saturated, which hides differences; its input is not.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    names = [o.name for o in model.graph.output]
    for out in list(names):
        cur = out
        while cur in producer and producer[cur].op_type in SQUASHING and producer[cur].input:
            cur = producer[cur].input[0]
            if cur not in names:
                names.append(cur)
    return names


def _exposed(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    return m


def _finite(values: Mapping[str, np.ndarray]) -> bool:
    return all(v.dtype.kind not in "fc" or bool(np.isfinite(v).all()) for v in values.values())


def verify_pruned(dg: DependencyGraph, removed_roots: set[int], pruned: onnx.ModelProto, *,
                  shapes: Shapes | None = None, samples: int = 2,
                  rtol: float = DEFAULT_RTOL, feeds: Sequence[Feed] = ()) -> VerifyResult:
    """Compare `pruned` with the masked original on `feeds` (real data, e.g. a few calibration samples)
    and on `samples` random feeds (`inputs.random_inputs`) of `shapes`; see the module doc.

    The two models never run side by side: the masked reference runs on every feed first, its
    session is dropped, then the pruned model runs. For a model whose weights stay on disk each
    session maps its weights from there, so at most one model's weights are resident at a time;
    the masked reference is the analysed graph plus the small masks, reading the original's data
    file (nothing is copied). The feeds are those sizes: batch 1 and a short sequence by default.
    Any size covers every removed slot, since the masks are per channel and every position of a
    tensor carries all of its channels; a longer sequence only costs memory."""
    reference, edges = masked_model(dg, removed_roots)
    names = compared_tensors(dg.model)
    real, rand = describe_feeds(dg.model, feeds), describe_feeds(dg.model, random=samples)
    # Random feeds take the real data's sizes unless `shapes` says otherwise (the analysis ran at them).
    sizes = shapes or (feed_shapes(feeds[0]) if feeds else None)
    runs = [(dict(f), True) for f in feeds] + [(random_inputs(dg.model, shapes=sizes, seed=1000 + s), False)
                                               for s in range(samples)]
    per: dict[str, float] = {}
    compared, skipped = 0, False
    wanted: list[tuple[Feed, dict[str, np.ndarray]]] = []  # feeds the pruned model runs on, and the answers

    def compare() -> None:
        nonlocal compared
        if not wanted:
            return
        new_sess = session(_exposed(pruned, names))
        for feed, want in wanted:
            got = run(new_sess, feed, names)
            compared += 1
            for name in want:
                per[name] = max(per.get(name, 0.0), relative_error(got[name], want[name]))
        wanted.clear()

    ref_sess: InferenceSession | None = session(_exposed(reference, names))
    dense: InferenceSession | None = None  # the original, run only where the reference is not finite
    for feed, is_real in runs:
        assert ref_sess is not None
        want = run(ref_sess, feed, names)
        if not _finite(want):
            dense = dense or session(_exposed(dg.model, names))
            if _finite(run(dense, feed, names)):  # the masks made it so: the pruned model is broken
                per.update({n: float("inf") for n, v in want.items() if not _finite({n: v})})
                compared += 1
                continue
            if is_real or not feeds:
                ref_sess = dense = None
                compare()
                why = (f"the original model gives NaN or inf on {real}: nothing to compare" if is_real else
                       f"the original model gives NaN or inf on {rand}; give real inputs with --calib")
                return VerifyResult(False, float("inf"), per, edges, compared, real if is_real else rand,
                                    unverifiable=why)
            skipped = True
            continue
        wanted.append((feed, want))
    ref_sess = dense = None  # their mapped weights go before the pruned model's come in
    compare()
    if not compared:
        return VerifyResult(False, float("inf"), per, edges, 0, "", unverifiable="no inputs to compare on")
    used = " and ".join(x for x in (real, "" if skipped else rand) if x)
    if skipped:
        used += f" (not the {rand}: the original gives NaN or inf on them)"
    worst = max(per.values(), default=0.0)
    return VerifyResult(worst <= rtol, worst, per, edges, compared, used)
