"""Calibration passes run only the nodes the fetched tensors need (prefix_model), with the same values;
the re-fit's squared error from the Grams equals the error computed from the rows."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calib.collect import expose_outputs, prefix_model, stream_tensors
from onnxprune.calib.stats import GramStats
from onnxprune.io import runtime
from onnxprune.recovery.solve import squared_error


def _chain() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((5, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="c2"),
             helper.make_node("Conv", ["x", "w3"], ["side"], name="c3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("side", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_prefix_keeps_only_the_needed_nodes_and_all_inputs() -> None:
    m = _chain()
    p = prefix_model(m, ["b"])
    assert [n.name for n in p.graph.node] == ["c1", "r1"]
    assert [o.name for o in p.graph.output] == ["b"]
    assert [i.name for i in p.graph.input] == ["x"]
    assert [t.name for t in p.graph.initializer] == ["w1"]  # only the weights the kept nodes read
    assert (p.ir_version, list(p.opset_import)) == (m.ir_version, list(m.opset_import))
    assert len(m.graph.node) == 4  # the input model is untouched
    assert [n.name for n in prefix_model(m, ["c", "side"]).graph.node] == ["c1", "r1", "c2", "c3"]


def test_stream_tensors_values_equal_the_whole_model() -> None:
    m = _chain()
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 3, 6, 6)).astype(np.float32)} for i in range(3)]
    whole = runtime.session(expose_outputs(m, ["a", "b"]))
    for feed, vals in zip(feeds, stream_tensors(m, ["a", "b", "x"], feeds), strict=True):
        want = runtime.run(whole, feed, ["a", "b"])
        np.testing.assert_array_equal(vals["a"], want["a"])
        np.testing.assert_array_equal(vals["b"], want["b"])
        np.testing.assert_array_equal(vals["x"], feed["x"])


def test_squared_error_equals_the_error_of_the_rows() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 7)), rng.standard_normal((300, 4))
    w, b = rng.standard_normal((4, 7)), rng.standard_normal(4)
    g = GramStats()
    g.update(x[:120], y[:120])
    g.update(x[120:], y[120:])
    err, yy = squared_error(g, w, b)
    np.testing.assert_allclose(err, float(((x @ w.T + b - y) ** 2).sum()), rtol=1e-10)
    np.testing.assert_allclose(yy, float((y ** 2).sum()), rtol=1e-12)
