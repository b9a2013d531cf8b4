"""model_stats: MACs against hand-computed numbers, params, size, op counts, shape fallbacks."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.measure.model_stats import ModelStats, macs_kept, model_stats, node_keys, serialized_size

F = TensorProto.FLOAT


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           inits: list[onnx.TensorProto] | None = None, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype=np.float32), name)


def test_conv_groups_stride_padding() -> None:
    # X [1, 8, 10, 10], W [16, 8/2, 3, 3], group 2, stride 2, pad 1 -> Y [1, 16, 5, 5]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, strides=[2, 2], pads=[1, 1, 1, 1],
                            kernel_shape=[3, 3], name="conv")
    m = _model([node], [helper.make_tensor_value_info("x", F, [1, 8, 10, 10])],
               [helper.make_tensor_value_info("y", F, None)], [_w("w", 16, 4, 3, 3), _w("b", 16)])
    s = model_stats(m)
    assert s.macs == 16 * 5 * 5 * 4 * 3 * 3  # out elements * (C/group * kh * kw)
    assert s.node_macs == {"conv": 14400}
    assert s.params == 16 * 4 * 9 + 16
    assert s.param_bytes == s.params * 4
    assert s.op_counts == {"Conv": 1}
    assert s.shape_source == "inference"


def test_conv1d_and_depthwise() -> None:
    c1 = helper.make_node("Conv", ["x", "w1"], ["h"], kernel_shape=[5], name="c1")  # [2, 4, 20] -> [2, 6, 16]
    dw = helper.make_node("Conv", ["h", "w2"], ["y"], group=6, kernel_shape=[3], pads=[1, 1], name="dw")
    m = _model([c1, dw], [helper.make_tensor_value_info("x", F, [2, 4, 20])],
               [helper.make_tensor_value_info("y", F, None)], [_w("w1", 6, 4, 5), _w("w2", 6, 1, 3)])
    s = model_stats(m)
    assert s.node_macs["c1"] == 2 * 6 * 16 * 4 * 5
    assert s.node_macs["dw"] == 2 * 6 * 16 * 1 * 3
    assert s.macs == 2 * 6 * 16 * (20 + 3)


def test_conv_transpose() -> None:
    # X [1, 4, 5, 5], W [4, 3, 2, 2] (C_in, C_out/group, k, k), stride 2 -> every input element hits 3*2*2 weights
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], name="up")
    m = _model([node], [helper.make_tensor_value_info("x", F, [1, 4, 5, 5])],
               [helper.make_tensor_value_info("y", F, None)], [_w("w", 4, 3, 2, 2)])
    assert model_stats(m).macs == 4 * 5 * 5 * 3 * 2 * 2


def test_gemm_transb_and_transa() -> None:
    g1 = helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc1")  # [3, 10] x [7, 10]^T
    g2 = helper.make_node("Gemm", ["h", "w2"], ["y"], transA=1, name="fc2")  # [3, 7]^T x [3, 5]
    m = _model([g1, g2], [helper.make_tensor_value_info("x", F, [3, 10])],
               [helper.make_tensor_value_info("y", F, None)], [_w("w", 7, 10), _w("b", 7), _w("w2", 3, 5)])
    s = model_stats(m)
    assert s.node_macs == {"fc1": 3 * 10 * 7, "fc2": 7 * 3 * 5}
    assert s.params == 70 + 7 + 15


def test_matmul_batched_broadcast_and_1d() -> None:
    mm1 = helper.make_node("MatMul", ["a", "b"], ["y1"], name="bmm")  # [2, 1, 4, 8] x [3, 8, 5] -> [2, 3, 4, 5]
    mm2 = helper.make_node("MatMul", ["v", "b2"], ["y2"], name="vec")  # [8] x [8, 6] -> [6]
    m = _model([mm1, mm2], [helper.make_tensor_value_info("a", F, [2, 1, 4, 8]),
                            helper.make_tensor_value_info("b", F, [3, 8, 5]),
                            helper.make_tensor_value_info("v", F, [8])],
               [helper.make_tensor_value_info("y1", F, None), helper.make_tensor_value_info("y2", F, None)],
               [_w("b2", 8, 6)])
    s = model_stats(m)
    assert s.node_macs["bmm"] == 2 * 3 * 4 * 5 * 8
    assert s.node_macs["vec"] == 6 * 8
    assert s.macs_by_op == {"MatMul": 960 + 48}


def test_dynamic_batch_uses_shapes_or_batch_1() -> None:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    m = _model([node], [helper.make_tensor_value_info("x", F, ["N", 16])],
               [helper.make_tensor_value_info("y", F, ["N", 4])], [_w("w", 16, 4)])
    assert model_stats(m).macs == 64
    s8 = model_stats(m, shapes={"x": (8, 16)})
    assert s8.macs == 8 * 64
    assert s8.input_shapes == {"x": (8, 16)}


def test_constant_nodes_counted_and_elementwise_zero() -> None:
    nodes = [
        helper.make_node("Constant", [], ["w"], value=_w("wv", 6, 3)),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Add", ["r", "r"], ["y"]),
    ]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [2, 6])], [helper.make_tensor_value_info("y", F, None)])
    s = model_stats(m)
    assert s.params == 18
    assert s.macs == 2 * 3 * 6
    assert s.op_counts == {"Constant": 1, "MatMul": 1, "Relu": 1, "Add": 1}
    assert s.num_nodes == 4
    assert set(s.node_macs) == {"mm"}


def test_runtime_fallback_for_data_dependent_shapes() -> None:
    # NonZero makes the MatMul input shape data dependent: shape inference cannot know it.
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"]),
        helper.make_node("Cast", ["nz"], ["nzf"], to=F),
        helper.make_node("Transpose", ["nzf"], ["t"]),
        helper.make_node("MatMul", ["t", "w"], ["y"], name="mm"),
    ]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [4, 2])],
               [helper.make_tensor_value_info("y", F, None)], [_w("w", 2, 3)])
    s = model_stats(m)  # random N(0,1) input: all 8 elements non-zero
    assert s.shape_source == "inference+runtime"
    assert s.node_macs["mm"] == 8 * 3 * 2
    assert s.unresolved == ()
    no_rt = model_stats(m, runtime_fallback=False)
    assert no_rt.unresolved == ("mm",) and no_rt.macs == 0


def test_unnamed_nodes_get_unique_keys() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 4])], [helper.make_tensor_value_info("y", F, None)],
               [_w("w", 4, 4)])
    assert node_keys(m.graph) == ["MatMul#0", "MatMul#1"]
    assert model_stats(m).node_macs == {"MatMul#0": 16, "MatMul#1": 16}


def test_size_and_to_dict_and_kept() -> None:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    m = _model([node], [helper.make_tensor_value_info("x", F, [1, 4])], [helper.make_tensor_value_info("y", F, None)],
               [_w("w", 4, 4)])
    s = model_stats(m)
    assert s.size_bytes == len(m.SerializeToString()) == serialized_size(m)
    d = s.to_dict()
    assert d["macs"] == 16 and d["node_macs"] == {"mm": 16} and d["input_shapes"] == {"x": [1, 4]}
    half = ModelStats(params=8, param_bytes=32, macs=8, size_bytes=10, op_counts={"MatMul": 1},
                      node_macs={"mm": 8}, macs_by_op={"MatMul": 8})
    assert macs_kept(s, half) == 0.5


def _light_models() -> list[str]:
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    return sorted(glob.glob(os.path.join(root, "*.onnx")))


@pytest.mark.parametrize("path", _light_models(), ids=os.path.basename)
def test_onnx_light_models(path: str) -> None:
    s = model_stats(onnx.load(path))
    assert s.unresolved == ()
    assert s.macs > 10_000_000 and s.params > 1_000_000
    assert s.macs == sum(s.node_macs.values())


def test_light_resnet50_known_numbers() -> None:
    path = next(p for p in _light_models() if p.endswith("light_resnet50.onnx"))
    s = model_stats(onnx.load(path))
    assert 25.5e6 < s.params < 25.7e6  # ResNet-50: 25.6 M parameters (incl. BN)
    assert 4.0e9 < s.macs < 4.2e9  # ~4.1 GMACs at 224x224
