"""`onnxprune quantize` through click's CliRunner, and check-trt on Q/DQ models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli import main
from onnxprune.deploy.tensorrt.preflight import check_trt

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits"


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def sparse_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits -> sparsify 2:4 for TensorRT -> quantize for TensorRT, all on the same calibration file."""
    folder = tmp_path_factory.mktemp("chain")
    sparse, q = folder / "s24.onnx", folder / "s24.int8.onnx"
    calib = ("--calib", DIGITS / "calib.npz", "--calib-samples", "64")
    assert invoke("sparsify", DIGITS / "digits_resnet.onnx", "-o", sparse, "--for", "tensorrt", "--no-refit", *calib)[0] == 0
    code, out, err = invoke("quantize", sparse, "-o", q, "--for", "tensorrt", "--report", folder / "r.json", *calib)
    assert code == 0, err
    assert "14 of 14 weighted layers INT8 (--for tensorrt, minmax calibration on 64" in out.replace("\n", " ")
    assert f"wrote {q}" in out
    report = json.loads((folder / "r.json").read_text())
    assert report["int8_layers"] == 14 and report["nm_weights_kept"] == 13
    return q


def test_check_trt_lists_int8_layers_and_the_quantized_2_4_weights(sparse_int8: Path) -> None:
    report = check_trt(onnx.load(str(sparse_int8)), min_macs=None)
    assert all(layer.int8 for layer in report.layers) and len(report.layers) == 14
    assert [layer.nm_compliant for layer in report.layers].count(True) == 13  # all but the 1-channel stem
    assert all(layer.weight.endswith("_quantized") for layer in report.layers)  # the INT8 initializers
    checks = {f.check for f in report.findings}
    assert not {c for c in checks if c.startswith("qdq-")}, checks
    assert "int8-layers" in checks and report.ok
    code, out, _ = invoke("check-trt", sparse_int8)
    assert code == 0 and "INT8" in out


def test_quantize_refuses_bad_input_with_one_line_and_writes_nothing(sparse_int8: Path, tmp_path: Path) -> None:
    out = tmp_path / "again.onnx"
    code, _, err = invoke("quantize", sparse_int8, "-o", out, "--calib", DIGITS / "calib.npz")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: the model is already quantized (")
    assert not out.exists()
    src = DIGITS / "digits_resnet.onnx"
    code, _, err = invoke("quantize", src, "-o", src)
    assert code == 2 and "is the input model" in err
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 3, 8, 8), np.float32))
    code, _, err = invoke("quantize", src, "-o", out, "--calib", bad)
    code_s, _, err_s = invoke("sparsify", src, "-o", out, "--calib", bad, "--pattern", "2:4", "--method", "wanda")
    assert code == code_s == 2 and err == err_s and err.count("\n") == 1 and "the model expects (1, 8, 8)" in err
    assert not out.exists() and not list(tmp_path.glob(".onnxprune-*"))
    code, _, err = invoke("quantize", src, "-o", out, "--keep", "nope*", "--calib", DIGITS / "calib.npz")
    assert code == 2 and "--keep 'nope*' matches no node" in err and not out.exists()


def _qdq(name: str, x: str, scale: float) -> list[onnx.NodeProto]:
    return [helper.make_node("QuantizeLinear", [x, "s", "z"], [f"{name}_q"], name=f"{name}_Q"),
            helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [f"{name}_dq"], name=f"{name}_DQ")]


def _qdq_model(nodes: list[onnx.NodeProto], out: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(-100, 100, (8, 8, 1, 1)).astype(np.int8), "w8"),
             numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    wdq = helper.make_node("DequantizeLinear", ["w8", "ws", "wz"], ["w"], name="W_DQ", axis=0)
    graph = helper.make_graph([wdq, *nodes], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_check_trt_flags_qdq_between_conv_and_its_activation() -> None:
    nodes = [*_qdq("x", "x", 0.05), helper.make_node("Conv", ["x_dq", "w"], ["c"], name="conv"),
             *_qdq("c", "c", 0.05), helper.make_node("Relu", ["c_dq"], ["y"], name="relu")]
    findings = [f for f in check_trt(_qdq_model(nodes, "y"), min_macs=None).findings if f.check.startswith("qdq")]
    assert [(f.check, f.node) for f in findings] == [("qdq-blocks-fusion", "conv")]
    assert "between Conv and its Relu" in findings[0].message


def test_check_trt_flags_residual_adds_without_skip_qdq_and_partial_layers() -> None:
    nodes = [*_qdq("x", "x", 0.05), helper.make_node("Conv", ["x_dq", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "x"], ["a"], name="add"),
             helper.make_node("Conv", ["a", "w"], ["y"], name="conv2")]
    checks = {(f.check, f.node) for f in check_trt(_qdq_model(nodes, "y"), min_macs=None).findings}
    assert ("qdq-residual-skip", "add") in checks
    assert ("qdq-partial", "conv2") in checks  # weight through DQ, input FP32
    fixed = [*_qdq("x", "x", 0.05), helper.make_node("Conv", ["x_dq", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "x_dq"], ["y"], name="add")]
    assert not [f for f in check_trt(_qdq_model(fixed, "y"), min_macs=None).findings
                if f.check.startswith("qdq-residual")]
