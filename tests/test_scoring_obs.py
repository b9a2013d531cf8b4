"""The `obs` criterion: structured OBS costs equal least-squares re-fit errors; the greedy sees redundancy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import Graph, outputs_of, plan_removing, set_init
from test_scoring_calibrated import calib_file, channel_scores

from onnxprune.api import analyse, prune
from onnxprune.calib.source import CalibConfig
from onnxprune.scoring.calibrated import DataDriven
from onnxprune.scoring.catalog import get_importance
from onnxprune.scoring.obs import SurgeonImportance, fit_nodes
from onnxprune.scoring.surgeon import LayerSurgeon, damped_inverse, greedy_scores


def _refit_error(x: np.ndarray, w: np.ndarray, keep: np.ndarray) -> tuple[float, np.ndarray]:
    """‖X Wᵀ − X_keep Vᵀ‖² at the least-squares V, and V scattered back to all columns."""
    y = x @ w.T
    v, *_ = np.linalg.lstsq(x[:, keep], y, rcond=None)
    full = np.zeros_like(w)
    full[:, keep] = v.T
    return float(((x[:, keep] @ v - y) ** 2).sum()), full


def _layer(seed: int = 0, *, n: int = 300, blocks: int = 4, per: int = 3, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((blocks * per, blocks * per))
    x = rng.standard_normal((n, blocks * per)) @ mix  # correlated columns
    return x, rng.standard_normal((k, blocks * per)), np.repeat(np.arange(blocks), per)


def _surgeon(x: np.ndarray, w: np.ndarray, slots: np.ndarray) -> LayerSurgeon:
    h = x.T @ x
    return LayerSurgeon(w, damped_inverse(h, 1e-12), slots, float(np.einsum("kd,de,ke->", w, h, w)))


def test_cost_of_each_slot_is_its_refit_error() -> None:
    x, w, slots = _layer()
    sg = _surgeon(x, w, slots)
    costs = sg.costs(np.arange(4))
    energy = float(((x @ w.T) ** 2).sum())
    for s in range(4):
        want, _ = _refit_error(x, w, slots != s)
        assert costs[s] == pytest.approx(want / energy, rel=1e-6)
    assert (costs > 1e-3).all()  # correlated but independent columns: every removal costs something


def test_removal_leaves_the_least_squares_weights_and_updates_later_costs() -> None:
    x, w, slots = _layer(seed=1)
    sg = _surgeon(x, w, slots)
    sg.remove(np.array([1]))
    _, want = _refit_error(x, w, slots != 1)
    np.testing.assert_allclose(sg.weight, want, rtol=1e-6, atol=1e-9)
    # the cost of removing slot 2 next is the extra error of dropping both, over the first fit
    both, _ = _refit_error(x, w, (slots != 1) & (slots != 2))
    one, _ = _refit_error(x, w, slots != 1)
    energy = float(((x @ w.T) ** 2).sum())
    assert sg.costs(np.array([2]))[0] == pytest.approx((both - one) / energy, rel=1e-5)
    assert sg.costs(np.array([1]))[0] == 0.0  # already gone


def test_greedy_keeps_one_channel_of_a_duplicated_pair() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((400, 3))
    x = np.column_stack([base[:, 0], base[:, 0], base[:, 1], base[:, 2]])  # slots 0 and 1 identical
    w = np.array([[1.0, 1.0, 0.2, 0.2], [0.5, 0.5, -0.2, 0.1]])
    slots = np.arange(4)
    independent = greedy_scores([_surgeon(x, w, slots)], 4, rounds=1)
    assert set(np.argsort(independent)[:2].tolist()) == {0, 1}  # each looks free alone
    greedy = greedy_scores([_surgeon(x, w, slots)], 4, rounds=4)
    lowest = set(np.argsort(greedy)[:2].tolist())
    assert len(lowest & {0, 1}) == 1, greedy  # removing one makes the other expensive
    assert np.all(np.diff(np.sort(greedy)) > 0)  # strictly ordered: the lowest k are the first k removed


def _dependent_chain(tmp_path: Path) -> tuple[onnx.ModelProto, CalibConfig]:
    g = Graph(seed=3)
    x = g.input("x", ("n", 3, 6, 6))
    h = g.relu(g.conv(x, 3, 6, k=1, name="c1"))
    g.output(g.conv(h, 6, 4, name="c2"))
    model = g.build()
    # c1's channel 5 is twice its channel 1 (so is its ReLU): c2 can read it through channel 1 instead
    set_init(model, "c1.w", lambda w: np.concatenate([w[:5], 2.0 * w[1:2]]))
    set_init(model, "c1.b", lambda b: np.concatenate([b[:5], 2.0 * b[1:2]]))
    return model, calib_file(tmp_path, (1, 3, 6, 6), n=48)


def test_obs_finds_the_channel_a_refit_can_replace(tmp_path: Path) -> None:
    model, cfg = _dependent_chain(tmp_path)
    dg = analyse(model)
    s = channel_scores(dg, "obs", "c1", cfg)
    assert int(np.argmin(s)) in (1, 5), s
    assert s.min() < 0.05 * np.sort(s)[1], s  # what remains is the ridge damping (1e-3)
    feed = {"x": np.random.default_rng(9).standard_normal((4, 3, 6, 6)).astype(np.float32)}
    dense = outputs_of(model, feed)
    out = prune(model, plan=plan_removing(dg, {"c1": [int(np.argmin(s))]}), calibration=cfg, reconstruct=True)
    got = outputs_of(out.model, feed)
    name = model.graph.output[0].name
    assert got[name].shape == dense[name].shape
    rel = np.abs(got[name] - dense[name]).max() / np.abs(dense[name]).max()
    other = int(np.argsort(s)[1])  # the cheapest channel a re-fit cannot replace
    worse = prune(model, plan=plan_removing(dg, {"c1": [other]}), calibration=cfg, reconstruct=True)
    rel_other = np.abs(outputs_of(worse.model, feed)[name] - dense[name]).max() / np.abs(dense[name]).max()
    assert rel < 0.005 and rel < 0.5 * rel_other, (rel, rel_other)  # measured 0.0029 vs 0.0101


def test_depthwise_consumers_compare_channels_by_the_layer_energy(tmp_path: Path) -> None:
    g = Graph(seed=4)
    x = g.input("x", ("n", 3, 6, 6))
    h = g.conv(x, 3, 4, k=1, name="c1")
    h = g.conv(h, 4, 4, group=4, name="dw")
    g.output(g.conv(h, 4, 2, k=1, name="c2"))
    model = g.build()
    set_init(model, "dw.w", lambda w: w * np.array([1.0, 1.0, 0.01, 1.0])[:, None, None, None])
    s = channel_scores(analyse(model), "obs", "c1", calib_file(tmp_path, (1, 3, 6, 6)))
    assert int(np.argmin(s)) == 2, s  # a depthwise channel whose output is tiny costs least
    assert np.isfinite(s).all()


def test_group_without_refittable_consumer_falls_back_to_l2(tmp_path: Path) -> None:
    g = Graph(seed=5)
    x = g.input("x", ("n", 3, 4, 4, 4))
    h = g.conv(x, 3, 4, k=1, rank=3, name="c1")
    g.output(g.conv(h, 4, 2, rank=3, name="c2"))  # 3-D convs have no re-fit (recovery.layers.unsupported)
    model = g.build()
    dg = analyse(model)
    group = next(grp for grp in dg.prunable if "c1" in grp.sources)
    obs = get_importance("obs")
    assert isinstance(obs, DataDriven)
    obs.configure(calibration=calib_file(tmp_path, (1, 3, 4, 4, 4)))
    np.testing.assert_allclose(obs(dg, group), get_importance("l2")(dg, group))


def test_consumers_with_huge_grams_are_left_out(tmp_path: Path) -> None:
    """A Gemm reading 4 channels x 36 positions (144 columns) is skipped above max_columns: l2 then."""
    g = Graph(seed=7)
    x = g.input("x", ("n", 3, 6, 6))
    h = g.node("Flatten", [g.relu(g.conv(x, 3, 4, k=1, name="c1"))], name="flat", axis=1)
    g.output(g.gemm(h, 144, 2, name="fc"))
    model = g.build()
    dg = analyse(model)
    assert set(fit_nodes(dg)) == {"fc"}
    assert fit_nodes(dg, max_columns=143) == {}
    group = next(grp for grp in dg.prunable if "c1" in grp.sources)
    cfg = calib_file(tmp_path, (1, 3, 6, 6))
    small = SurgeonImportance(max_columns=143)
    small.configure(calibration=cfg)
    np.testing.assert_allclose(small(dg, group), get_importance("l2")(dg, group))
    full = SurgeonImportance()
    full.configure(calibration=cfg)
    assert not np.allclose(full(dg, group), get_importance("l2")(dg, group))
