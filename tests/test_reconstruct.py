"""Least-squares reconstruction on tiny graphs where the answer is known."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, get_node, set_init, source_roots
from onnx import numpy_helper

from onnxprune.api import analyse
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.runtime import run
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import reconstruct
from onnxprune.planning.plan import Plan
from onnxprune.recovery.layers import plan_layers, waves


def _feeds(name: str, shape: tuple[int, ...], n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def _out_error(model: onnx.ModelProto, dense: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> float:
    out = dense.graph.output[0].name
    return max(_rel(run(model, f)[out], run(dense, f)[out]) for f in feeds)


def _redundant_chain() -> onnx.ModelProto:
    """x[8] -> g1 (8->6) -> g2 (6->3): channel 5 of g1 is h0 + 2*h1, so it can be removed exactly."""
    g = Graph()
    x = g.input("x", ("N", 8))
    g.output(g.gemm(g.gemm(x, 8, 6, name="g1"), 6, 3, name="g2"))
    m = g.build()
    set_init(m, "g1.w", lambda w: np.vstack([w[:5], w[0] + 2 * w[1]]))
    set_init(m, "g1.b", lambda b: np.append(b[:5], b[0] + 2 * b[1]))
    return m


def test_redundant_channel_is_recovered_exactly() -> None:
    dg = analyse(_redundant_chain())
    removed = source_roots(dg, "g1", [5])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    feeds = _feeds("x", (64, 8))
    assert _out_error(pruned, dg.model, feeds) > 0.05
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, damp=1e-10)
    assert [(lf.node, lf.fitted, lf.direct) for lf in res.layers] == [("g2", True, True)]
    assert res.layers[0].rel_error_after < 1e-9
    assert _out_error(res.model, dg.model, _feeds("x", (64, 8), seed=7)) < 1e-5  # unseen inputs too
    # The default damping is close to exact as well.
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds)
    assert _out_error(res.model, dg.model, feeds) < 1e-2


def test_inputs_are_not_modified() -> None:
    dg = analyse(_redundant_chain())
    removed = source_roots(dg, "g1", [5])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    before = (pruned.SerializeToString(), dg.model.SerializeToString())
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=_feeds("x", (64, 8)))
    assert res.fitted == 1 and res.notes[0].startswith("re-fitted 1 of 1 layers")
    assert (pruned.SerializeToString(), dg.model.SerializeToString()) == before


def test_grouped_conv_is_fitted_per_group() -> None:
    """c1 (1x1, 8->8) -> c2 (3x3, group 2): channel 3 = c0 + c1 and channel 7 = c4 - c5 (one coupled slot)."""
    g = Graph()
    x = g.input("x", ("N", 8, 6, 6))
    g.output(g.conv(g.conv(x, 8, 8, k=1, name="c1"), 8, 4, group=2, name="c2"))
    m = g.build()

    def redundant(a: np.ndarray) -> np.ndarray:
        a[3], a[7] = a[0] + a[1], a[4] - a[5]
        return a

    set_init(m, "c1.w", redundant)
    set_init(m, "c1.b", redundant)
    dg = analyse(m, grouped="index")
    removed = source_roots(dg, "c1", [3])
    assert removed == source_roots(dg, "c1", [7])  # grouped convs lose the same index in every group
    pruned = ApplyPlan(dg, removed)(dg.model).model
    assert numpy_helper.to_array(next(t for t in pruned.graph.initializer if t.name == "c2.w")).shape == (4, 3, 3, 3)
    feeds = _feeds("x", (8, 8, 6, 6))
    assert _out_error(pruned, dg.model, feeds) > 0.05
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, damp=1e-10)
    assert [lf.fitted for lf in res.layers] == [True]
    assert _out_error(res.model, dg.model, _feeds("x", (8, 8, 6, 6), seed=3)) < 1e-5


def test_bias_absorbs_a_constant_channel() -> None:
    """g1 channel 5 is relu(2) = 2 everywhere; g2 has no bias: reconstruction adds one."""
    g = Graph()
    x = g.input("x", ("N", 8))
    g.output(g.gemm(g.relu(g.gemm(x, 8, 6, name="g1")), 6, 3, bias=False, name="g2"))
    m = g.build()
    set_init(m, "g1.w", lambda w: np.vstack([w[:5], np.zeros((1, 8))]))
    set_init(m, "g1.b", lambda b: np.append(b[:5], 2.0))
    dg = analyse(m)
    removed = source_roots(dg, "g1", [5])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    feeds = _feeds("x", (64, 8))
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, damp=1e-10)
    node = get_node(res.model, "g2")
    assert len(node.input) == 3 and node.input[2]
    w2 = numpy_helper.to_array(next(t for t in dg.model.graph.initializer if t.name == "g2.w"))
    bias = numpy_helper.to_array(next(t for t in res.model.graph.initializer if t.name == node.input[2]))
    np.testing.assert_allclose(bias, 2.0 * w2[:, 5], rtol=1e-4, atol=1e-5)
    assert _out_error(res.model, dg.model, feeds) < 1e-5
    onnx.checker.check_model(res.model)


def _convnet(seed: int = 0) -> onnx.ModelProto:
    g = Graph(seed=seed)
    x = g.input("x", ("N", 3, 8, 8))
    h = g.relu(g.conv(x, 3, 16, name="a"))
    h = g.relu(g.conv(h, 16, 16, name="b"))
    h = g.relu(g.conv(h, 16, 16, name="c"))
    h = g.node("GlobalAveragePool", [h], name="gap")
    h = g.node("Flatten", [h], name="flat")
    g.output(g.gemm(h, 16, 5, name="fc"))
    return g.build()


def _half(dg: DependencyGraph) -> set[int]:
    plan = Plan({gr.id: list(range(gr.size // 2)) for gr in dg.prunable})
    return plan.removed_roots(dg)


def test_error_never_increases_and_waves_follow_the_chain() -> None:
    dg = analyse(_convnet())
    removed = _half(dg)
    pruned = ApplyPlan(dg, removed)(dg.model).model
    feeds = _feeds("x", (16, 3, 8, 8))
    layers, skipped = plan_layers(pruned, dg, removed)
    assert [(lay.node, lay.wave) for lay in layers] == [("b", 0), ("c", 1), ("fc", 2)] and not skipped
    assert [len(w) for w in waves(layers)] == [1, 1, 1]
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds)
    assert res.waves == 3 and res.fitted == 3 and not res.reverted
    for lf in res.layers:
        assert lf.rel_error_after <= lf.rel_error_before
    for name, after in res.after.items():
        assert after.rel_error <= res.before[name].rel_error
    assert _out_error(res.model, dg.model, feeds) <= _out_error(pruned, dg.model, feeds)


def test_a_fit_that_does_not_help_keeps_the_pruned_weights() -> None:
    """Removing a dead channel (relu of a negative constant) changes nothing: the fit cannot do better."""
    g = Graph()
    x = g.input("x", ("N", 8))
    g.output(g.gemm(g.relu(g.gemm(x, 8, 6, name="g1")), 6, 3, name="g2"))
    m = g.build()
    set_init(m, "g1.w", lambda w: np.vstack([w[:5], np.zeros((1, 8))]))
    set_init(m, "g1.b", lambda b: np.append(b[:5], -1.0))
    dg = analyse(m)
    removed = source_roots(dg, "g1", [5])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=_feeds("x", (64, 8)))
    assert res.fitted == 0 and len(res.layers) == 1
    assert "pruned weights score best on held-out samples" in res.layers[0].note
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=_feeds("x", (64, 8)), damp=1e-3)  # fixed damping
    assert res.fitted == 0 and "would not lower the error" in res.layers[0].note
    assert res.layers[0].rel_error_before < 1e-12
    assert res.model.SerializeToString() == pruned.SerializeToString()


def test_conv_transpose_is_fitted() -> None:
    """ConvTranspose layers are re-fitted like Conv (geometries: tests/test_reconstruct_convtranspose.py)."""
    g = Graph()
    x = g.input("x", ("N", 3, 4, 4))
    g.output(g.conv_transpose(g.relu(g.conv(x, 3, 8, name="a")), 8, 4, name="up"))
    dg = analyse(g.build())
    removed = source_roots(dg, "a", [0, 1, 2])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    feeds = _feeds("x", (4, 3, 4, 4))
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds)
    assert [(lf.node, lf.op_type, lf.fitted) for lf in res.layers] == [("up", "ConvTranspose", True)]
    assert not res.skipped and res.layers[0].rel_error_after < res.layers[0].rel_error_before
    assert _out_error(res.model, dg.model, feeds) < _out_error(pruned, dg.model, feeds)


@pytest.mark.parametrize("propagate", [True, False])
def test_propagation_refits_layers_whose_inputs_changed(propagate: bool) -> None:
    """a -> b -> c where only a's output channels are removed: b is direct, c only with propagate."""
    g = Graph()
    x = g.input("x", ("N", 8))
    h = g.relu(g.gemm(x, 8, 6, name="a"))
    h = g.relu(g.gemm(h, 6, 6, name="b"))
    y = g.gemm(h, 6, 3, name="c")
    g.output(g.node("Add", [y, y], name="out"))
    dg = analyse(g.build())
    removed = source_roots(dg, "a", [0, 1])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    layers, _ = plan_layers(pruned, dg, removed, propagate=propagate)
    assert [(lay.node, lay.direct) for lay in layers] == ([("b", True), ("c", False)] if propagate else [("b", True)])


def test_cached_and_live_dense_targets_agree() -> None:
    dg = analyse(_convnet(seed=1))
    removed = _half(dg)
    pruned = ApplyPlan(dg, removed)(dg.model).model
    feeds = _feeds("x", (16, 3, 8, 8))
    cached = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, frontier_bytes=0)
    live = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, cache_bytes=0, frontier_bytes=0)
    assert [lf.rel_error_after for lf in cached.layers] == pytest.approx([lf.rel_error_after for lf in live.layers])
    assert cached.fitted == live.fitted == 3
    assert {i.name for i in cached.model.graph.input} == {"x"}  # no cache inputs left behind


def test_matmul_bias_lives_in_the_following_add() -> None:
    """x -> MatMul+Add (8->6) -> relu -> MatMul+Add (6->3): the second Add's constant is fitted as the bias."""
    g = Graph()
    x = g.input("x", ("N", 8))
    h = g.relu(g.matmul(x, 8, 6, bias=True, name="m1"))
    g.output(g.node("Relu", [g.matmul(h, 6, 3, bias=True, name="m2")], name="out"))
    m = g.build()
    set_init(m, "m1.w", lambda w: np.hstack([w[:, :5], np.zeros((8, 1))]))
    set_init(m, "m1.b", lambda b: np.append(b[:5], 1.5))  # channel 5 is the constant 1.5
    dg = analyse(m)
    removed = source_roots(dg, "m1", [5])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    feeds = _feeds("x", (64, 8))
    layers, _ = plan_layers(pruned, dg, removed)
    assert [(lay.node, lay.bias_node) for lay in layers] == [("m2", "m2_bias")]
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, damp=1e-10)
    assert res.fitted == 1
    assert _out_error(res.model, dg.model, feeds) < 1e-5
