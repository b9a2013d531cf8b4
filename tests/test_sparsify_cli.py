"""`onnxprune sparsify` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli import main
from onnxprune.sparsity.compliance import nm_report
from onnxprune.sparsity.layout import is_nm_compliant


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w2"], ["y"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((12, 8, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((3, 12)).astype(np.float32), "w2")]
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                opset_imports=[helper.make_opsetid("", 17)]), str(path))
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((10, 8, 5, 5)).astype(np.float32))
    return path


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_cli_pattern_writes_model_table_and_report(model_path: Path, method: str) -> None:
    out, rep = model_path.parent / "out.onnx", model_path.parent / "r.json"
    res = CliRunner().invoke(main, ["sparsify", str(model_path), "-o", str(out), "--pattern", "2:4",
                                    "--method", method, "--calib", str(model_path.parent / "calib.npz"),
                                    "--calib-batch", "4", "--report", str(rep)])
    assert res.exit_code == 0, res.output
    assert "conv1" in res.output and "2:4 ok" in res.output and f"wrote {out}" in res.output
    data = json.loads(rep.read_text())
    assert [w["nm_compliant"] for w in data["weights"]] == [True, True]
    assert data["total_sparsity"] == pytest.approx(0.5)
    w1 = numpy_helper.to_array(onnx.load(str(out)).graph.initializer[0])
    assert is_nm_compliant(w1, 1, 2, 4)


def test_cli_unstructured_without_calibration_warns(model_path: Path) -> None:
    out = model_path.parent / "out.onnx"
    res = CliRunner().invoke(main, ["sparsify", str(model_path), "-o", str(out), "--sparsity", "0.75",
                                    "--method", "wanda", "--calib-samples", "4"])
    assert res.exit_code == 0, res.output
    assert "random inputs" in res.output  # the CalibrationWarning reaches stderr
    assert "75.0%" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--pattern", "2:4", "-o", "SAME"], "is the input model"),
    (["--pattern", "2:4", "--sparsity", "0.5"], "exactly one of --sparsity and --pattern"),
    ([], "exactly one of --sparsity and --pattern"),
    (["--pattern", "4:2"], "0 < N < M"),
    (["--pattern", "2:4", "--calib", "missing.npz", "--method", "wanda"], "no such file"),
])
def test_cli_errors_are_one_line(model_path: Path, args: list[str], message: str) -> None:
    args = [str(model_path) if a == "SAME" else a for a in args]
    if "-o" not in args:
        args += ["-o", str(model_path.parent / "out.onnx")]
    res = CliRunner().invoke(main, ["sparsify", str(model_path), *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_cli_refit_defaults_on_with_calib(model_path: Path) -> None:
    out = model_path.parent / "out.onnx"
    calib = str(model_path.parent / "calib.npz")
    res = CliRunner().invoke(main, ["sparsify", str(model_path), "-o", str(out), "--sparsity", "0.5",
                                    "--calib", calib, "--calib-batch", "5"])
    assert res.exit_code == 0, res.output
    assert "magnitude 50%, re-fitted: sparsified 2 of 2 weights" in res.output
    res = CliRunner().invoke(main, ["sparsify", str(model_path), "-o", str(out), "--sparsity", "0.5",
                                    "--calib", calib, "--no-refit", "--min-reduction", "16"])
    assert res.exit_code == 0, res.output
    assert "below --min-reduction 16" in res.output and "magnitude 50%: sparsified 1 of 1 weights" in res.output


def test_for_tensorrt_means_2_4_and_refuses_other_patterns(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parent.parent / "models" / "zoo" / "resnet_ts.onnx"
    out = tmp_path / "o.onnx"
    ok = CliRunner().invoke(main, ["sparsify", str(src), "-o", str(out), "--for", "tensorrt"])
    assert ok.exit_code == 0, ok.output
    rows = nm_report(onnx.load(str(out)), n=2, m=4)
    eligible = [r for r in rows if r.shape[r.reduction_axis] % 4 == 0]
    assert eligible and all(r.nm_compliant for r in eligible)
    bad = CliRunner().invoke(main, ["sparsify", str(src), "-o", str(out), "--for", "tensorrt", "--sparsity", "0.5"])
    assert bad.exit_code == 2
    assert "2:4" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
