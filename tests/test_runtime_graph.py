"""The pruned model keeps ONNX Runtime's graph optimisations: NCHWc convolutions and folded shape chains.

ONNX Runtime's optimised graph (ORT_ENABLE_ALL, written with `optimized_model_filepath`) is the
structure latency depends on. Counts are compared with the dense model's on the same CPU, so the
test holds whatever NCHWc block (or none) this CPU has.
"""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from graphs import Graph
from zoo import zoo_entries

from onnxprune.api import prune
from onnxprune.runtime_profile import resolve_round_to


def optimised(model: onnx.ModelProto, folder: Path, tag: str) -> onnx.ModelProto:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(folder / f"{tag}.onnx")
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return onnx.load(folder / f"{tag}.onnx")


def plain_convs(model: onnx.ModelProto) -> int:
    """Convs ORT left in the default domain (outside NCHWc)."""
    return sum(n.op_type == "Conv" and n.domain in ("", "ai.onnx") for n in model.graph.node)


def test_value_info_carries_the_pruned_shapes() -> None:
    g = Graph(opset=17)
    x = g.input("x", ("batch", 4, "h", "w"))
    y = g.relu(g.conv(x, 4, 8, name="a"))
    g.output(g.conv(y, 8, 4, name="b"))
    r = prune(g.build(), ratio=0.5)
    vi = {v.name: v.type.tensor_type.shape.dim for v in r.model.graph.value_info}
    a_out = next(n.output[0] for n in r.model.graph.node if n.name == "a")
    assert a_out in vi, sorted(vi)
    assert vi[a_out][1].dim_value == 4


@pytest.mark.parametrize("name", ["real_yolov8n", "yolov8_ts"])
def test_pruned_yolo_keeps_ort_optimisations(name: str, tmp_path: Path) -> None:
    entry = next((e for e in zoo_entries() if e.name == name), None)
    if entry is None:
        pytest.skip(f"{name} not available (make models)")
    dense = onnx.load(entry.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = prune(dense, target_macs=0.5, round_to=max(8, resolve_round_to("auto")), shapes=entry.shapes).model
    d, p = optimised(dense, tmp_path, "dense"), optimised(pruned, tmp_path, "pruned")
    # Every Conv that runs in NCHWc in the dense model still does (a Split piece's width stays a multiple).
    assert plain_convs(p) <= plain_convs(d)
    # No op type gains nodes: the shape chains the dense graph folded stay folded.
    cd = collections.Counter(n.op_type for n in d.graph.node)
    cp = collections.Counter(n.op_type for n in p.graph.node)
    assert not {k: (cd[k], v) for k, v in cp.items() if v > cd[k]}
