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
from onnx import helper, numpy_helper

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.engine import DependencyGraph
from onnxprune.inputs import random_inputs
from onnxprune.runtime import run, session

DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    max_rel_error: float
    per_output: dict[str, float]
    masked_edges: int
    samples: int

    def describe(self) -> str:
        state = "PASS" if self.ok else "FAIL"
        return (f"verify {state}: max relative error {self.max_rel_error:.2e} over {len(self.per_output)} outputs, "
                f"{self.samples} random inputs, {self.masked_edges} masked consumer edges")


def masked_model(dg: DependencyGraph, removed_roots: set[int]) -> tuple[onnx.ModelProto, int]:
    """The analysed model with a 0/1 mask at every consumer edge of the removed channels."""
    m = copy.deepcopy(dg.model)
    actx = ApplyContext(m, dg.analysis.roots, removed_roots)
    nodes = {n.name: n for n in m.graph.node}
    elem = _elem_types(m)
    new_nodes: dict[str, list[onnx.NodeProto]] = {}
    count = 0
    for k, edge in enumerate(dg.analysis.consume_edges):
        keep = actx.keep(edge.track.ids)
        if keep.all():
            continue
        rank = len(dg.analysis.view.shape(edge.tensor) or ())
        shape = [keep.shape[edge.track.axes.index(a)] if a in edge.track.axes else 1 for a in range(rank)]
        dtype = helper.tensor_dtype_to_np_dtype(elem.get(edge.tensor, onnx.TensorProto.FLOAT))
        mask_name, out_name = f"__oracle_mask_{k}", f"__oracle_masked_{k}"
        m.graph.initializer.append(numpy_helper.from_array(keep.astype(dtype).reshape(shape), mask_name))
        new_nodes.setdefault(edge.node, []).append(
            helper.make_node("Mul", [edge.tensor, mask_name], [out_name], name=f"__oracle_mul_{k}"))
        nodes[edge.node].input[edge.input_index] = out_name
        count += 1
    ordered: list[onnx.NodeProto] = []
    for n in m.graph.node:
        ordered.extend(new_nodes.get(n.name, []))
        ordered.append(n)
    del m.graph.node[:]
    m.graph.node.extend(ordered)
    return m, count


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001
        return {}
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind not in "fc":
        return 0.0 if np.array_equal(a, b) else float("inf")
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-6)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / scale if a.size else 0.0


def verify_pruned(dg: DependencyGraph, removed_roots: set[int], pruned: onnx.ModelProto, *,
                  shapes: Mapping[str, tuple[int, ...]] | None = None, samples: int = 2,
                  rtol: float = DEFAULT_RTOL) -> VerifyResult:
    reference, edges = masked_model(dg, removed_roots)
    ref_sess, new_sess = session(reference), session(pruned)
    per: dict[str, float] = {}
    for s in range(samples):
        feed = random_inputs(dg.model, shapes=shapes, seed=1000 + s)
        want = run(ref_sess, feed, [o.name for o in dg.model.graph.output])
        got = run(new_sess, feed, list(want))
        for name in want:
            per[name] = max(per.get(name, 0.0), relative_error(got[name], want[name]))
    worst = max(per.values(), default=0.0)
    return VerifyResult(worst <= rtol, worst, per, edges, samples)
