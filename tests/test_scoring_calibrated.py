"""Calibration-based criteria on tiny graphs whose right answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import Graph
from onnx import numpy_helper

from onnxprune.api import analyse
from onnxprune.calib.source import CalibConfig, CalibrationWarning
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.tracks import map_roots
from onnxprune.scoring import calibrated
from onnxprune.scoring.calibrated import DataDriven
from onnxprune.scoring.catalog import get_importance
from onnxprune.scoring.sensitivity import Sensitivity


def set_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))


def get_init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name)).astype(np.float64)


def calib_file(tmp_path: Path, shape: tuple[int, ...], *, n: int = 32, seed: int = 0) -> CalibConfig:
    x = np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)
    path = tmp_path / "calib.npz"
    np.savez(path, x=x)
    return CalibConfig(path=path, batch=8)


def channel_scores(dg: DependencyGraph, criterion: str, source: str, calib: CalibConfig | None,
                   **kwargs: object) -> np.ndarray:
    """Scores of `source`'s output channels, in channel order."""
    imp = Sensitivity(**kwargs) if criterion == "sensitivity" else get_importance(criterion)  # type: ignore[arg-type]
    assert isinstance(imp, DataDriven)
    imp.configure(calibration=calib)
    group = _group(dg, source)
    scores = imp(dg, group)
    src = next(s for s in dg.analysis.sources if s.node == source)
    return np.asarray(scores)[np.searchsorted(group.slots, map_roots(dg.analysis.roots, src.ids))]


def _group(dg: DependencyGraph, source: str) -> Group:
    return next(g for g in dg.groups if source in g.sources)


def conv_chain(*, relu: bool) -> onnx.ModelProto:
    g = Graph(seed=1)
    x = g.input("x", ("n", 3, 6, 6))
    h = g.conv(x, 3, 6, name="c1")
    if relu:
        h = g.relu(h, name="r1")
    g.output(g.conv(h, 6, 4, name="c2"))
    return g.build()


@pytest.mark.parametrize("criterion", ["activation", "apoz", "wanda"])
def test_dead_channel_ranks_lowest(tmp_path: Path, criterion: str) -> None:
    model = conv_chain(relu=True)
    w = get_init(model, "c1.w")
    w[2] = 0.0
    b = get_init(model, "c1.b")
    b[2] = -1.0  # channel 2 of c1 is always 0 after the ReLU
    set_init(model, "c1.w", w)
    set_init(model, "c1.b", b)
    dg = analyse(model)
    s = channel_scores(dg, criterion, "c1", calib_file(tmp_path, (1, 3, 6, 6)))
    assert int(np.argmin(s)) == 2, s
    if criterion == "apoz":
        assert s[2] == pytest.approx(0.0)


def test_flap_ranks_a_fluctuating_heavily_read_channel_highest(tmp_path: Path) -> None:
    model = conv_chain(relu=False)
    w1, w2 = get_init(model, "c1.w"), get_init(model, "c2.w")
    w1[4] *= 10.0  # channel 4 varies much more
    w2[:, 4] *= 10.0  # and is read with larger weights
    set_init(model, "c1.w", w1)
    set_init(model, "c2.w", w2)
    s = channel_scores(analyse(model), "flap", "c1", calib_file(tmp_path, (1, 3, 6, 6)))
    assert int(np.argmax(s)) == 4, s


def test_flap_is_variance_times_column_energy(tmp_path: Path) -> None:
    model = conv_chain(relu=False)
    cfg = calib_file(tmp_path, (1, 3, 6, 6))
    dg = analyse(model)
    s = channel_scores(dg, "flap", "c1", cfg)
    from onnxprune.calib.collect import collect_stats

    st = collect_stats(dg.model, [{"x": np.load(cfg.path)["x"]}], channels={"c1": 1}).channels["c1"]  # type: ignore[arg-type]
    want = st.var * (get_init(model, "c2.w") ** 2).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(s, want / want.mean(), rtol=1e-6)


def test_wanda_matches_a_hand_computation(tmp_path: Path) -> None:
    g = Graph(seed=2)
    x = g.input("x", ("n", 5))
    h = g.gemm(x, 5, 4, name="g1")
    g.output(g.gemm(h, 4, 3, name="g2"))
    model = g.build()
    cfg = calib_file(tmp_path, (1, 5), n=20)
    dg = analyse(model)
    s = channel_scores(dg, "wanda", "g1", cfg)
    xs = np.load(cfg.path)["x"].astype(np.float64)  # type: ignore[arg-type]
    w1, b1, w2 = get_init(model, "g1.w"), get_init(model, "g1.b"), get_init(model, "g2.w")
    y = xs @ w1.T + b1  # g1's output = g2's input
    norm = np.sqrt((y**2).sum(axis=0))
    consumer = np.abs(w2).sum(axis=0) * norm  # g2.w is [3, 4] (transB): columns are g1's channels
    producer = np.abs(w1).sum(axis=1) * norm
    want = consumer / consumer.mean() + producer / producer.mean()
    np.testing.assert_allclose(s, want, rtol=1e-5)


def test_sensitivity_follows_the_output_weight(tmp_path: Path) -> None:
    model = conv_chain(relu=False)
    w2 = get_init(model, "c2.w")
    w2[:, 1] *= 5.0  # channel 1 feeds a large output weight
    w2[:, 3] = 0.0  # channel 3 feeds nothing
    set_init(model, "c2.w", w2)
    s = channel_scores(analyse(model), "sensitivity", "c1", calib_file(tmp_path, (1, 3, 6, 6)), samples=8)
    assert int(np.argmax(s)) == 1, s
    assert int(np.argmin(s)) == 3, s
    assert s[3] < 1e-6


def test_sensitivity_chunks_cap_forward_passes(tmp_path: Path) -> None:
    dg = analyse(conv_chain(relu=True))
    imp = Sensitivity(max_evals=2, samples=8)
    imp.configure(calibration=calib_file(tmp_path, (1, 3, 6, 6)))
    scores = imp(dg, _group(dg, "c1"))
    assert scores.shape == (6,)
    assert imp.probe(dg).evaluations == 2


def test_statistics_are_gathered_once_for_all_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = Graph(seed=3)
    x = g.input("x", ("n", 3, 6, 6))
    h = g.relu(g.conv(x, 3, 6, name="c1"))
    h = g.relu(g.conv(h, 6, 5, name="c2"))
    g.output(g.conv(h, 5, 2, name="c3"))
    dg = analyse(g.build())
    calls = []
    real = calibrated.collect_edge_stats

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(calibrated, "collect_edge_stats", counting)
    imp = get_importance("wanda")
    assert isinstance(imp, DataDriven)
    imp.configure(calibration=calib_file(tmp_path, (1, 3, 6, 6)))
    assert len(dg.prunable) == 2
    for grp in dg.prunable:
        assert np.all(np.isfinite(imp(dg, grp)))
    assert len(calls) == 1


def test_without_calibration_data_random_inputs_and_a_warning() -> None:
    dg = analyse(conv_chain(relu=True))
    imp = get_importance("activation")
    assert isinstance(imp, DataDriven)
    imp.configure(calibration=None)
    with pytest.warns(CalibrationWarning, match="random inputs"):
        s = imp(dg, _group(dg, "c1"))
    assert s.shape == (6,) and np.all(s >= 0)
