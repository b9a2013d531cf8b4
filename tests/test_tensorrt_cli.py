"""check-trt and build-engine through the CLI group (no TensorRT installed here)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli import main


def _model(path: Path, *, op: str = "Relu") -> str:
    w = np.ones((8, 8), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node(op, ["m"], ["y"], name="last")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # stubs-only: not a real install


def test_build_engine_without_tensorrt_is_one_line(tmp_path: Path, no_tensorrt: None) -> None:
    model = _model(tmp_path / "m.onnx")
    result = CliRunner().invoke(main, ["build-engine", model, "-o", str(tmp_path / "m.plan"), "--sparse", "--fp16"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "pip install 'onnxprune[tensorrt]'" in lines[0] and "pypi.nvidia.com" in lines[0]
    assert "Traceback" not in result.output


def test_emit_trtexec_needs_no_tensorrt(tmp_path: Path, no_tensorrt: None) -> None:
    model = _model(tmp_path / "m.onnx")
    result = CliRunner().invoke(main, ["build-engine", model, "-o", "m.plan", "--sparse", "--fp16", "--emit-trtexec",
                                       "--workspace", "1024", "--shapes", "x:1x8/4x8/8x8"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith("trtexec --onnx=") and "--sparsity=enable" in line and "--fp16" in line
    assert "--memPoolSize=workspace:1024M" in line and "--optShapes=x:4x8" in line


def test_check_trt_json_and_exit_codes(tmp_path: Path) -> None:
    good = _model(tmp_path / "good.onnx")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["check-trt", good, "--json", str(out), "--round-to", "8"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["ok"] and doc["layers"][0]["node"] == "mm" and doc["layers"][0]["axis"] == 0

    bad = _model(tmp_path / "bad.onnx", op="Unique")
    result = CliRunner().invoke(main, ["check-trt", bad])
    assert result.exit_code == 4
    assert "unsupported-op" in result.output
