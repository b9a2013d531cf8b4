"""quantize(keep_sensitive=N): the layers whose quantization harms the output most are measured and left FP32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph

from onnxprune.cli import main
from onnxprune.deploy.qdq import int8_layers
from onnxprune.deploy.quantize import QuantizeOptions, quantize
from onnxprune.deploy.sensitive import LayerError, LayerScan, choose
from onnxprune.errors import OnnxPruneError


def outlier_chain() -> onnx.ModelProto:
    """stem -> relu -> x[1, 400, 1, ...] -> c1 -> relu -> head. One channel of c1's input is 400x the
    others (c1's weights undo it, so the function is an ordinary one): a per-tensor INT8 range over
    that input leaves the other channels a few levels, so c1's quantization harms the output most."""
    g = Graph(seed=3)
    x = g.input("x", ("N", 4, 6, 6))
    a = g.relu(g.conv(x, 4, 8, name="stem"), name="r0")
    gain = np.ones((1, 8, 1, 1), np.float32)
    gain[0, 1] = 400.0
    big = g.node("Mul", [a, g.const("gain", gain)], name="spread")
    h = g.relu(g.conv(big, 8, 8, name="c1"), name="r1")
    g.output(g.conv(h, 8, 4, name="head"))
    model = g.build()
    w = next(t for t in model.graph.initializer if t.name == "c1.w")
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[:, 1] /= 400.0
    w.CopyFrom(onnx.numpy_helper.from_array(arr, "c1.w"))
    return model


def feeds(n: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((4, 4, 6, 6)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
def test_the_layer_behind_an_outlier_channel_is_found_and_left_fp32(target: str) -> None:
    model = outlier_chain()
    res = quantize(model, calibration=feeds(), options=QuantizeOptions(target=target, keep_sensitive=1,
                                                                       sensitive_samples=8))
    assert res.sensitive is not None
    scan = res.sensitive.scan
    assert [layer.node for layer in scan.layers][0] == "c1"
    assert {layer.node for layer in scan.layers} == {"stem", "c1", "head"}
    assert scan.samples == 8
    fp32 = {d.node: d.reason for d in res.layers if not d.int8}
    assert list(fp32) == ["c1"] and "quantization-sensitive, #1 of 3" in fp32["c1"]
    assert {layer.node for layer in int8_layers(res.model)} == {"stem", "head"}
    assert res.sensitive.error < 0.5 * scan.base  # leaving it FP32 removes most of the error
    assert res.to_dict()["sensitivity"]["layers"][0]["node"] == "c1"
    assert res.to_dict()["sensitivity"]["kept_fp32"] == ["c1"]
    assert any(n.startswith("--keep-sensitive 1: 1 layer(s) kept FP32") for n in res.notes)


def test_only_layers_whose_fp32_lowers_the_error_are_taken() -> None:
    scan = LayerScan(0.5, (LayerError("a", 0.1), LayerError("b", 0.2), LayerError("c", 0.3), LayerError("d", 0.49),
                           LayerError("e", 0.5), LayerError("f", 0.7)), 8)
    assert [layer.node for layer in scan.harmful(9)] == ["a", "b", "c", "d"]
    assert scan.rank("e") == 5
    # errors of layers together: b does not help next to a (interaction), c does; e and f never tried
    together = {frozenset("ab"): 0.15, frozenset("ac"): 0.05, frozenset("acd"): 0.04}
    tried: list[set[str]] = []

    def error(fp32: set[str]) -> float:
        tried.append(fp32)
        return together[frozenset(fp32)]

    taken, err = choose(scan, 3, error)
    assert [layer.node for layer in taken] == ["a", "c", "d"] and err == 0.04
    assert tried == [{"a", "b"}, {"a", "c"}, {"a", "c", "d"}]
    taken, err = choose(scan, 1, error)  # the best alone: its scan error, nothing measured again
    assert [layer.node for layer in taken] == ["a"] and err == 0.1
    assert choose(LayerScan(0.5, (LayerError("x", 0.6),), 8), 2, error) == ([], 0.5)


def test_keep_sensitive_on_the_command_line(tmp_path: Path) -> None:
    src, out, report, calib = (tmp_path / n for n in ("m.onnx", "m.int8.onnx", "r.json", "c.npz"))
    onnx.save(outlier_chain(), str(src))
    np.savez(calib, x=np.concatenate([f["x"] for f in feeds()]))
    res = CliRunner().invoke(main, ["quantize", str(src), "-o", str(out), "--calib", str(calib), "--keep-sensitive",
                                    "1", "--no-progress", "--report", str(report)])
    assert res.exit_code == 0, res.output
    assert "quantization-sensitive" in res.stdout and "--keep-sensitive 1: 1 layer(s) kept FP32" in res.stdout
    data = json.loads(report.read_text())
    assert [d["node"] for d in data["layers"] if not d["int8"]] == ["c1"]
    assert data["sensitivity"]["metric"] == "channel_error" and data["sensitivity"]["result"] < data["sensitivity"]["all_int8"]
    bad = CliRunner().invoke(main, ["quantize", str(src), "-o", str(tmp_path / "x.onnx"), "--keep-sensitive", "-1"])
    assert bad.exit_code == 2


def test_bad_option_values_are_one_line_errors() -> None:
    with pytest.raises(OnnxPruneError, match="keep_sensitive must be >= 0"):
        QuantizeOptions(keep_sensitive=-1)
