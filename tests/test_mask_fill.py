"""Mask probe with mean fill: a removed channel reads its calibration mean instead of 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph, source_roots
from onnx import numpy_helper

from onnxprune.api import analyse
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.measure.curves import SensitivityResult, sensitivity_curves
from onnxprune.scoring.mask_probe import MaskProbe


def _offset_model() -> Graph:
    """x -> c1 (3->6) -> relu -> c2 (6->4): channel 5 of c1 is relu(4 + 0.1 * noise), almost a constant."""
    g = Graph(seed=4)
    x = g.input("x", ("N", 3, 6, 6))
    g.output(g.conv(g.relu(g.conv(x, 3, 6, name="c1")), 6, 4, name="c2"))
    return g


def _dg() -> DependencyGraph:
    m = _offset_model().build()
    w = next(t for t in m.graph.initializer if t.name == "c1.w")
    b = next(t for t in m.graph.initializer if t.name == "c1.b")
    wa, ba = numpy_helper.to_array(w).copy(), numpy_helper.to_array(b).copy()
    wa[5] *= 0.01
    ba[5] = 4.0
    w.CopyFrom(numpy_helper.from_array(wa, "c1.w"))
    b.CopyFrom(numpy_helper.from_array(ba, "c1.b"))
    return analyse(m)


def _feeds(n: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((4, 3, 6, 6)).astype(np.float32)} for _ in range(n)]


def test_a_near_constant_channel_costs_little_with_mean_fill() -> None:
    dg = _dg()
    zero, mean = MaskProbe(dg, _feeds()), MaskProbe(dg, _feeds(), fill="mean")
    assert zero.error(set()) == 0.0 and mean.error(set()) == 0.0
    offset = source_roots(dg, "c1", [5])
    assert zero.error(offset) > 0.1  # zero fill charges the channel for its offset of 4
    assert mean.error(offset) < 0.02 * zero.error(offset)  # only its tiny fluctuation is lost
    # An ordinary channel: the mean fill never does worse than the zero fill on the data it averaged.
    other = source_roots(dg, "c1", [0])
    assert mean.error(other) <= zero.error(other) + 1e-12


def test_mean_fill_is_exact_for_a_constant_channel() -> None:
    dg = _dg()
    w = next(t for t in dg.model.graph.initializer if t.name == "c1.w")
    arr = numpy_helper.to_array(w).copy()
    arr[5] = 0.0
    w.CopyFrom(numpy_helper.from_array(arr, "c1.w"))
    assert MaskProbe(dg, _feeds(), fill="mean").error(source_roots(dg, "c1", [5])) < 1e-6


@pytest.mark.filterwarnings("ignore::onnxprune.calib.batching.CalibrationWarning")
def test_fill_is_validated_and_recorded_in_curves(tmp_path: Path) -> None:
    dg = _dg()
    with pytest.raises(OnnxPruneError, match="fill must be one of"):
        MaskProbe(dg, _feeds(), fill="median")
    curves = sensitivity_curves(dg, calibration=None, samples=4, ratios=(0.5,), fill="mean")
    assert curves.fill == "mean"
    curves.save(tmp_path / "c.json")
    assert SensitivityResult.load(tmp_path / "c.json").fill == "mean"


def test_cli_fill_mean_is_recorded(tmp_path: Path) -> None:
    model, js = tmp_path / "m.onnx", tmp_path / "s.json"
    onnx.save(_dg().model, str(model))
    r = CliRunner().invoke(main, ["sensitivity", str(model), "--ratios", "0.5", "--fill", "mean", "--json", str(js),
                                  "--no-progress", "--shapes", "x:2x3x6x6", "--round-to", "1"])
    assert r.exit_code == 0, r.stderr
    assert SensitivityResult.load(js).fill == "mean"
