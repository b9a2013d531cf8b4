"""check_trt: operator support, restrictions, 2:4 layout per op, channel multiples."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.deploy.tensorrt.findings import Severity
from onnxprune.deploy.tensorrt.preflight import check_trt
from onnxprune.deploy.tensorrt.support import support_matrix


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x_shape: list[int],
           *, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _two_four(w: np.ndarray, axis: int) -> np.ndarray:
    """Zero the last two of every 4 consecutive weights along `axis`."""
    out = np.moveaxis(w.copy(), axis, -1)
    groups = out.reshape(*out.shape[:-1], -1, 4)
    groups[..., 2:] = 0
    return np.moveaxis(groups.reshape(out.shape), -1, axis)


def _checks(report: object, check: str) -> list[str]:
    return [f.node for f in report.findings if f.check == check]  # type: ignore[attr-defined]


def test_matrix_is_the_real_table() -> None:
    m = support_matrix()
    assert m.tensorrt_version == "10.15"
    assert m.get("Conv") is not None and m.get("Conv").supported  # type: ignore[union-attr]
    assert not m.get("Unique").supported  # type: ignore[union-attr]
    assert "LayerNormalization" in m.unsupported_in_8_5


def test_unsupported_op_and_restricted_resize() -> None:
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["r"], name="up", mode="cubic"),
        helper.make_node("Resize", ["r", "", "scales"], ["r2"], name="crop",
                         coordinate_transformation_mode="tf_crop_and_resize"),
        helper.make_node("Resize", ["r2", "", "scales"], ["r3"], name="ok", mode="nearest"),
        helper.make_node("Unique", ["r3"], ["u"], name="uniq"),
    ]
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    report = check_trt(_model(nodes, [scales], [1, 3, 8, 8]))
    assert _checks(report, "unsupported-op") == ["uniq"]
    assert _checks(report, "resize-mode") == ["up"]
    assert _checks(report, "resize-coordinate-mode") == ["crop"]
    assert not [f for f in report.findings if f.node == "ok"]
    assert not report.ok
    assert all(f.severity is Severity.ERROR for f in report.errors)


def test_topk_and_qdq_restrictions() -> None:
    k = numpy_helper.from_array(np.array([5000], np.int64), "k")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, np.int8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "s"], ["dq"], name="dequant"),
        helper.make_node("Flatten", ["dq"], ["f"], name="flat"),
        helper.make_node("TopK", ["f", "k"], ["v", "i"], name="topk"),
    ]
    report = check_trt(_model(nodes, [k, scale, zp], [1, 8000]))
    assert _checks(report, "qdq-zero-point") == ["quant"]
    assert _checks(report, "topk-k-limit") == ["topk"]


def test_custom_domain_and_pool_rank() -> None:
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool1d", kernel_shape=[2]),
             helper.make_node("MyOp", ["p"], ["y"], name="custom", domain="com.example")]
    report = check_trt(_model(nodes, [], [1, 4, 16]))
    assert _checks(report, "pool-rank") == ["pool1d"]
    assert _checks(report, "custom-domain") == ["custom"]


def _layer(report: object, name: str) -> object:
    return next(layer for layer in report.layers if layer.node == name)  # type: ignore[attr-defined]


def test_conv_two_four_on_axis_1() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 64, 3, 3)).astype(np.float32)
    good = _two_four(w, 1)
    wrong_axis = _two_four(w, 0)  # 2:4 along output channels: useless to TensorRT
    nodes = [helper.make_node("Conv", ["x", "wg"], ["a"], name="good", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "wb"], ["b"], name="bad", pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(good, "wg"), numpy_helper.from_array(wrong_axis, "wb")]
    report = check_trt(_model(nodes, inits, [1, 64, 32, 32]))
    assert _layer(report, "good").nm_compliant and _layer(report, "good").axis == 1  # type: ignore[attr-defined]
    assert not _layer(report, "bad").nm_compliant  # type: ignore[attr-defined]
    assert _checks(report, "not-2:4") == ["bad"]
    assert _layer(report, "good").macs == 64 * 64 * 9 * 32 * 32  # type: ignore[attr-defined]


def test_matmul_axis_0_and_gemm_trans_b() -> None:
    rng = np.random.default_rng(1)
    b = rng.normal(size=(128, 96)).astype(np.float32)  # MatMul B[K, N]: K = axis 0
    gt = rng.normal(size=(96, 128)).astype(np.float32)  # Gemm transB=1: B[N, K]: K = axis 1
    g0 = rng.normal(size=(128, 96)).astype(np.float32)  # Gemm transB=0: B[K, N]: K = axis 0
    nodes = [
        helper.make_node("MatMul", ["x", "b"], ["m"], name="mm"),
        helper.make_node("Gemm", ["x", "gt"], ["g1"], name="gemm_t", transB=1),
        helper.make_node("Gemm", ["x", "g0"], ["g2"], name="gemm_n"),
        helper.make_node("Add", ["g1", "g2"], ["s"], name="add"),
        helper.make_node("Add", ["s", "m"], ["y"], name="add2"),
    ]
    inits = [numpy_helper.from_array(_two_four(b, 0), "b"), numpy_helper.from_array(_two_four(gt, 1), "gt"),
             numpy_helper.from_array(_two_four(g0, 1), "g0")]  # g0 pruned on the wrong axis
    report = check_trt(_model(nodes, inits, [4, 128]))
    assert _layer(report, "mm").nm_compliant and _layer(report, "mm").axis == 0  # type: ignore[attr-defined]
    assert _layer(report, "gemm_t").nm_compliant and _layer(report, "gemm_t").axis == 1  # type: ignore[attr-defined]
    assert not _layer(report, "gemm_n").nm_compliant and _layer(report, "gemm_n").axis == 0  # type: ignore[attr-defined]
    assert _layer(report, "gemm_t").out_channels == 96  # type: ignore[attr-defined]


def test_channel_multiples_and_small_layers() -> None:
    rng = np.random.default_rng(2)
    w = _two_four(rng.normal(size=(30, 12, 1, 1)).astype(np.float32), 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="tiny")]
    report = check_trt(_model(nodes, [numpy_helper.from_array(w, "w")], [1, 12, 8, 8]), round_to=8)
    msgs = [f.message for f in report.findings if f.check == "channel-multiple"]
    assert any("output channels 30" in m for m in msgs) and any("input channels 12" in m for m in msgs)
    layer = _layer(report, "tiny")
    assert layer.nm_compliant and not layer.sparse_candidate  # type: ignore[attr-defined]
    assert _checks(report, "sparsity-no-gain") == ["tiny"]
    relaxed = check_trt(_model(nodes, [numpy_helper.from_array(w, "w")], [1, 12, 8, 8]), round_to=2)
    assert not _checks(relaxed, "channel-multiple")


def test_report_json_roundtrip() -> None:
    import json

    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    report = check_trt(_model(nodes, [], [1, 4]))
    doc = json.loads(report.to_json())
    assert doc["ok"] is True and doc["findings"] == [] and "TensorRT 10.15" in doc["operator_table"]
