"""The correctness oracle: removing channels equals masking them at the consumer edges.

Removing a set of channel slots must give the same outputs as the *original* graph with a 0/1
mask multiplied in on the channel axes wherever those channels enter a channel-mixing consumer
(Conv/Gemm/MatMul reduction inputs, channel sums, recurrent inputs). Every op between a producer
and those edges works channel by channel, so this is exact whatever the activations do at 0.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.engine import DependencyGraph
from onnxprune.graph.masking import mask_dtype, mask_shape, splice_masks
from onnxprune.inputs import random_inputs
from onnxprune.runtime import run, session

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
    samples: int

    def describe(self) -> str:
        state = "PASS" if self.ok else "FAIL"
        return (f"verify {state}: max relative error {self.max_rel_error:.2e} over {len(self.per_output)} tensors, "
                f"{self.samples} random inputs, {self.masked_edges} masked consumer edges")


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
    """max|a - b| relative to max|b|, with differences below ABS_FLOOR counted as 0."""
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind not in "fc":
        return 0.0 if np.array_equal(a, b) else float("inf")
    if not a.size:
        return 0.0
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


def verify_pruned(dg: DependencyGraph, removed_roots: set[int], pruned: onnx.ModelProto, *,
                  shapes: Mapping[str, tuple[int, ...]] | None = None, samples: int = 2,
                  rtol: float = DEFAULT_RTOL) -> VerifyResult:
    reference, edges = masked_model(dg, removed_roots)
    names = compared_tensors(dg.model)
    ref_sess, new_sess = session(_exposed(reference, names)), session(_exposed(pruned, names))
    per: dict[str, float] = {}
    for s in range(samples):
        feed = random_inputs(dg.model, shapes=shapes, seed=1000 + s)
        want = run(ref_sess, feed, names)
        got = run(new_sess, feed, names)
        for name in want:
            per[name] = max(per.get(name, 0.0), relative_error(got[name], want[name]))
    worst = max(per.values(), default=0.0)
    return VerifyResult(worst <= rtol, worst, per, edges, samples)
