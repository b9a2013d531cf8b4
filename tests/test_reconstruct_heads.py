"""Sigmoid-head weighting of reconstruction: weighted Grams, logit channels found by id, a better fit where it counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph, source_roots
from onnx import numpy_helper

from onnxprune.api import analyse, prune
from onnxprune.calib.collect import expose_outputs
from onnxprune.calib.stats import GramStats
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.io.runtime import run
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import head_weights, reconstruct
from onnxprune.planning.plan import Plan
from onnxprune.recovery.heads import SlopeWeight, final_sigmoids, logit_mask, logit_roots
from onnxprune.recovery.layers import plan_layers


def test_row_weights_equal_rows_scaled_by_their_root() -> None:
    rng = np.random.default_rng(0)
    x, y, w = rng.standard_normal((50, 4)), rng.standard_normal((50, 3)), rng.random(50) + 0.1
    weighted, scaled = GramStats(), GramStats()
    weighted.update(x, y, weight=2.0, row_weights=w)
    r = np.sqrt(2.0 * w)[:, None]
    scaled.update(x * r, y * r)
    assert weighted.xtx is not None and weighted.xty is not None and weighted.ysq is not None
    np.testing.assert_allclose(weighted.xtx, scaled.xtx)
    np.testing.assert_allclose(weighted.xty, scaled.xty)
    np.testing.assert_allclose(weighted.ysq, scaled.ysq)
    np.testing.assert_allclose(weighted.xsum, (2.0 * w[:, None] * x).sum(0))
    np.testing.assert_allclose(weighted.ysum, (2.0 * w[:, None] * y).sum(0))
    assert weighted.rows == np.float64(2.0 * w.sum())


def test_slope_weight_peaks_at_the_decision_boundary() -> None:
    sw = SlopeWeight(np.array([False, True, True]), floor=0.01)
    y = np.array([[0.0, -9.0, -9.0], [50.0, 0.0, -9.0], [0.0, -9.0, 9.0], [0.0, 9.0, 2.0]])
    w = sw(y)
    assert w[1] == np.float64(1.01)  # a logit at 0: 4 * sigmoid'(0) = 1, plus the floor
    assert w[0] < 0.011 and w[2] < 0.011  # column 0 is not a logit; +-9 is far from any boundary
    assert 0.01 < w[3] < 1.0


def _detector_head(opset: int = 17) -> onnx.ModelProto:
    """YOLO-like head: trunk -> box conv (4) and cls conv (3), Concat, Split [4, 3], Sigmoid on the scores."""
    g = Graph(opset=opset, seed=3)
    x = g.input("x", ("N", 3, 6, 6))
    h = g.relu(g.conv(x, 3, 8, name="trunk"))
    box = g.conv(h, 8, 4, k=1, name="box")
    cls = g.conv(h, 8, 3, k=1, name="cls")
    cat = g.node("Concat", [box, cls], name="cat", axis=1)
    parts = g.node_multi("Split", [cat, g.ints("split_sizes", [4, 3])], name="split", n_out=2, axis=1)
    score = g.node("Sigmoid", [parts[1]], name="score")
    g.output(g.node("Concat", [parts[0], score], name="out", axis=1))
    return g.build()


def test_logit_channels_are_found_through_concat_and_split() -> None:
    dg = analyse(_detector_head())
    assert [n.name for n in final_sigmoids(dg.model)] == ["score"]
    roots = logit_roots(dg)
    nodes = {n.name: n for n in dg.model.graph.node}
    cls = logit_mask(dg, nodes["cls"], roots)
    assert cls is not None and cls.tolist() == [True, True, True]
    assert logit_mask(dg, nodes["box"], roots) is None
    assert logit_mask(dg, nodes["trunk"], roots) is None


def test_a_sigmoid_feeding_another_layer_is_not_a_head() -> None:
    g = Graph()
    x = g.input("x", ("N", 8))
    gate = g.node("Sigmoid", [g.gemm(x, 8, 8, name="g1")], name="gate")
    g.output(g.gemm(g.node("Mul", [gate, x], name="mul"), 8, 2, name="g2"))
    assert final_sigmoids(g.build()) == []


def _scores_model() -> onnx.ModelProto:
    """x[8] -> g1 (8->6) -> relu -> g2 (6->4) -> Sigmoid: most logits far below 0, a few near it."""
    g = Graph(seed=5)
    x = g.input("x", ("N", 8))
    g.output(g.node("Sigmoid", [g.gemm(g.relu(g.gemm(x, 8, 6, name="g1")), 6, 4, name="g2")], name="prob"))
    m = g.build()
    b = next(t for t in m.graph.initializer if t.name == "g2.b")
    b.CopyFrom(numpy_helper.from_array(np.full(4, -6.0, dtype=np.float32), "g2.b"))
    w = next(t for t in m.graph.initializer if t.name == "g2.w")
    w.CopyFrom(numpy_helper.from_array((3.0 * numpy_helper.to_array(w)).astype(np.float32), "g2.w"))
    return m


def test_head_weighting_trades_background_error_for_error_near_the_boundary() -> None:
    """g1 loses half its channels, so g2 cannot be fitted exactly: the weighted fit spends its error on
    rows far below the decision boundary (where the sigmoid is flat) and is closer where it is steep."""
    dg = analyse(_scores_model())
    removed = source_roots(dg, "g1", [0, 1, 2])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    layers, _ = plan_layers(pruned, dg, removed)
    assert set(head_weights(dg, layers)) == {"g2"}
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((256, 8)).astype(np.float32)} for _ in range(4)]
    held = {"x": rng.standard_normal((4096, 8)).astype(np.float32)}
    want = run(expose_outputs(dg.model, ["g2"]), held)["g2"]
    near = want.max(axis=1) > -2.0
    assert 0.05 < float(near.mean()) < 0.5

    def logit_errors(model: onnx.ModelProto) -> tuple[float, float]:
        err = np.abs(run(expose_outputs(model, ["g2"]), held)["g2"] - want)
        return float(err[near].mean()), float(err[~near].mean())

    plain = logit_errors(reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds).model)  # default: off
    weighted = logit_errors(reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, head_floor=0.01).model)
    assert weighted[0] < 0.97 * plain[0]  # measured: 0.574 vs 0.603
    assert weighted[1] > plain[1]  # measured: 0.539 vs 0.449


def test_a_conv_transpose_score_map_is_a_head() -> None:
    """PP-OCR's DB head: ... -> ConvTranspose -> Sigmoid -> output; its channels are on axis 1."""
    g = Graph(seed=2)
    x = g.input("x", ("N", 3, 4, 4))
    up = g.conv_transpose(g.relu(g.conv(x, 3, 8, name="c")), 8, 2, name="up")
    g.output(g.node("Sigmoid", [up], name="prob"))
    dg = analyse(g.build())
    up_node = next(n for n in dg.model.graph.node if n.name == "up")
    mask = logit_mask(dg, up_node, logit_roots(dg))
    assert mask is not None and mask.tolist() == [True, True]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_prune_and_cli_pass_head_floor_to_reconstruction(tmp_path: Path) -> None:
    """`prune(head_floor=)` and `--head-floor` give the weighted re-fit of `reconstruct(head_floor=)`."""
    src = tmp_path / "m.onnx"
    onnx.save(_scores_model(), src)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((256, 8)).astype(np.float32))
    dg = analyse(onnx.load(src))
    removed = source_roots(dg, "g1", [0, 1, 2])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    want = _weights(reconstruct(pruned, dg=dg, removed_roots=removed, batches=str(calib), head_floor=0.01).model)
    plain = _weights(reconstruct(pruned, dg=dg, removed_roots=removed, batches=str(calib)).model)
    assert not np.allclose(want["g2.w"], plain["g2.w"])
    plan = Plan(removals={g.id: [i for i, r in enumerate(g.slots) if int(r) in removed] for g in dg.groups
                          if any(int(r) in removed for r in g.slots)})
    res = prune(onnx.load(src), plan=plan, calibration=str(calib), head_floor=0.01)
    np.testing.assert_allclose(_weights(res.model)["g2.w"], want["g2.w"], rtol=1e-5, atol=1e-6)
    res.plan.signatures = {g.id: g.sources for g in dg.groups}
    res.plan.save(tmp_path / "plan.json")
    out = tmp_path / "o.onnx"
    args = ["prune", str(src), "-o", str(out), "--plan", str(tmp_path / "plan.json"), "--calib", str(calib),
            "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--head-floor", "0.01"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(_weights(onnx.load(out))["g2.w"], want["g2.w"], rtol=1e-5, atol=1e-6)
    bad = CliRunner().invoke(main, [*args, "--head-floor", "-1"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    with pytest.raises(OnnxPruneError, match="head_floor"):
        prune(onnx.load(src), plan=plan, calibration=str(calib), head_floor=-1.0)
