"""fill="refit": probes and sensitivity curves that measure the error left after the consumers' re-fit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import Graph, group_of, plan_removing, set_init
from test_scoring_calibrated import calib_file

from onnxprune.api import analyse
from onnxprune.measure.curves import CurveProbe, sensitivity_curves
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import reconstruct
from onnxprune.recovery.fidelity import compare_outputs
from onnxprune.scoring.refit_probe import Compensator


def _chain() -> onnx.ModelProto:
    """c1 -> ReLU -> c2 (the output); c1's channel 5 is twice its channel 1, so c2 can do without it."""
    g = Graph(seed=3)
    x = g.input("x", ("n", 3, 6, 6))
    g.output(g.conv(g.relu(g.conv(x, 3, 6, k=1, name="c1")), 6, 4, name="c2"))
    model = g.build()
    set_init(model, "c1.w", lambda w: np.concatenate([w[:5], 2.0 * w[1:2]]))
    set_init(model, "c1.b", lambda b: np.concatenate([b[:5], 2.0 * b[1:2]]))
    return model


def _depthwise() -> onnx.ModelProto:
    g = Graph(seed=4)
    x = g.input("x", ("n", 3, 6, 6))
    h = g.conv(g.relu(g.conv(x, 3, 4, k=1, name="c1")), 4, 4, group=4, name="dw")
    g.output(g.conv(g.relu(h), 4, 2, k=1, name="c2"))
    return g.build()


def _mlp() -> onnx.ModelProto:
    """Gemm -> ReLU -> MatMul + Add(bias) (how exporters write Linear)."""
    g = Graph(seed=6)
    x = g.input("x", ("n", 8))
    g.output(g.matmul(g.relu(g.gemm(x, 8, 6, name="g1")), 6, 3, bias=True, name="m2"))
    return g.build()


def _feeds(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _errors(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], source: str, slot: int,
            *, damp: float = 1e-3) -> tuple[float, float]:
    """rel error of removing one slot of `source`'s group: (zero-filled, zero-filled + consumers re-fitted)."""
    dg = analyse(model)
    comp = Compensator(dg, feeds, damp=damp)
    probe = CurveProbe(dg, feeds, overrides=comp.initializers)
    g = group_of(dg, source)
    removed = {int(g.slots[slot])}
    weights = comp.schedule(g, np.array([slot]), [1])[1]
    assert weights, "no consumer was re-fitted"
    return probe.measure(removed).rel_error, probe.measure(removed, weights).rel_error


def test_refit_removes_the_error_of_a_channel_others_predict() -> None:
    feeds = _feeds((8, 3, 6, 6))
    zero5, refit5 = _errors(_chain(), feeds, "c1", 5)
    zero0, refit0 = _errors(_chain(), feeds, "c1", 0)
    assert zero5 > 0.05 and refit5 < 0.03 * zero5, (zero5, refit5)  # measured 0.30 vs 0.005 (ridge damping)
    assert refit0 < zero0 and refit0 > 10 * refit5, (zero0, refit0, refit5)


def test_refit_probe_matches_reconstruction_of_the_pruned_model() -> None:
    """c2 is the output layer: the probe's re-fit is what `reconstruct` does, up to the damping."""
    model, feeds = _chain(), _feeds((8, 3, 6, 6))
    _, refit0 = _errors(model, feeds, "c1", 0, damp=1e-6)
    dg = analyse(model)
    removed = plan_removing(dg, {"c1": [0]}).removed_roots(dg)
    pruned = ApplyPlan(dg, removed)(dg.model).model
    rec = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, damp=1e-6, check_outputs=False)
    got = next(iter(compare_outputs(dg.model, [rec.model], feeds)[0].values())).rel_error
    assert got == pytest.approx(refit0, rel=0.02), (got, refit0)


@pytest.mark.parametrize("build,shape,source", [(_chain, (8, 3, 6, 6), "c1"), (_depthwise, (8, 3, 6, 6), "c1"),
                                                 (_mlp, (64, 8), "g1")])
def test_refit_never_does_worse_than_zero_when_the_consumer_is_the_last_layer(
        build: Callable[[], onnx.ModelProto], shape: tuple[int, ...], source: str) -> None:
    model, feeds = build(), _feeds(shape)
    for slot in range(3):
        zero, refit = _errors(model, feeds, source, slot)
        assert refit <= zero * (1 + 1e-6), (slot, zero, refit)


def test_curves_with_refit_fill(tmp_path: Path) -> None:
    model = _chain()
    cfg = calib_file(tmp_path, (1, 3, 6, 6), n=32)
    dg = analyse(model)
    curves = {fill: sensitivity_curves(dg, calibration=cfg, criterion="obs", ratios=(0.2, 0.5), samples=32,
                                       fill=fill) for fill in ("zero", "refit")}
    assert curves["refit"].fill == "refit"
    path = tmp_path / "c.json"
    curves["refit"].save(path)
    zero, refit = (next(c for c in curves[f].curves if "c1" in c.sources) for f in ("zero", "refit"))
    assert refit.points[0].removed == 1 and refit.points[0].rel_error < 0.01 * zero.points[0].rel_error
    assert all(r.rel_error <= z.rel_error * (1 + 1e-6) for r, z in zip(refit.points, zero.points, strict=True))
    with pytest.raises(Exception, match="fill must be one of"):
        sensitivity_curves(dg, calibration=cfg, fill="median")
