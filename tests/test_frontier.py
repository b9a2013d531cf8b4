"""Passes that start from tensors kept after earlier passes (calib.frontier) give the values of runs from
the graph inputs, whatever the byte budget, and run only the part of the graph a pass adds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph
from onnx import numpy_helper

from onnxprune.api import analyse
from onnxprune.calib.collect import stream_tensors
from onnxprune.calib.frontier import Budget, Frontier, plan_keeps
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import reconstruct
from onnxprune.planning.plan import Plan


def _net() -> onnx.ModelProto:
    """x -> a -> b -> c with a skip from a's output to an Add after c, then d."""
    g = Graph(seed=0)
    x = g.input("x", ("N", 3, 8, 8))
    a = g.relu(g.conv(x, 3, 8, name="a"))
    b = g.relu(g.conv(a, 8, 8, name="b"))
    c = g.conv(b, 8, 8, name="c")
    s = g.node("Add", [c, a], name="skip")
    g.output(g.conv(g.relu(s), 8, 4, name="d"))
    return g.build()


def _feeds(n: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _inputs(m: onnx.ModelProto) -> dict[str, str]:
    return {n.name: n.input[0] for n in m.graph.node if n.op_type == "Conv"}


def _bump(m: onnx.ModelProto, node: str) -> None:
    """Change a conv's weights in place, as a re-fit does after its pass."""
    w = next(n for n in m.graph.node if n.name == node).input[1]
    t = next(t for t in m.graph.initializer if t.name == w)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5 + 0.1, w))


@pytest.mark.parametrize("budget", [1 << 30, 0, 900])
def test_passes_equal_runs_from_the_graph_inputs(budget: int) -> None:
    m, feeds = _net(), _feeds()
    ins = _inputs(m)
    order = [["b"], ["c"], ["d"]]  # fit b, then c, then d: each pass wants the layers' inputs
    requests = [[ins[k] for k in keys] for keys in order]
    changes = {"b": 0, "c": 1, "d": 2}
    front = Frontier(m, feeds, requests, changes, Budget(budget))
    for k, keys in enumerate(order):
        got = list(front.run(m))
        want = list(stream_tensors(m, requests[k], feeds))
        for g, w in zip(got, want, strict=True):
            for name in requests[k]:
                np.testing.assert_array_equal(g[name], w[name])
        for key in keys:
            _bump(m, key)
    assert front.budget.used == 0  # nothing is kept past its last reader


def test_a_pass_starts_after_the_last_change_upstream() -> None:
    m = _net()
    ins = _inputs(m)
    keep, last = plan_keeps(m, [[ins["b"]], [ins["c"]], [ins["d"]]], {"b": 0, "c": 1, "d": 2})
    # pass 0 computes a's output (final: a never changes), which pass 1 and the Add in pass 2 start
    # from; c's input depends on b, changed after pass 0, so pass 1 makes it again and keeps it for
    # pass 2, which recomputes c (changed after pass 1)
    assert keep[0] == {ins["b"]} and last[ins["b"]] == 2
    assert keep[1] == {ins["c"]} and keep[2] == set()
    # with nothing changing every pass starts where the previous ended
    keep, _ = plan_keeps(m, [[ins["b"]], [ins["c"]], [ins["d"]]], {})
    assert keep[0] == {ins["b"]} and ins["c"] in keep[1]


def test_reconstruct_with_and_without_the_frontier_is_identical() -> None:
    m = _net()
    dg = analyse(m)
    removed = Plan({gr.id: list(range(gr.size // 2)) for gr in dg.prunable}).removed_roots(dg)
    pruned = ApplyPlan(dg, removed)(dg.model).model
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((8, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    runs = [reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, frontier_bytes=b)
            for b in (0, 1 << 30, 20_000)]  # 20 kB: the feeds (18 kB) but no kept tensor
    assert runs[0].fitted > 1 and runs[0].waves > 1
    for r in runs[1:]:
        assert [(lf.node, lf.rel_error_after) for lf in r.layers] == [(lf.node, lf.rel_error_after) for lf in runs[0].layers]
        for a, b in zip(runs[0].model.graph.initializer, r.model.graph.initializer, strict=True):
            assert a.name == b.name
            np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


@pytest.mark.parametrize("cut_bytes", [512 << 20, 0])
def test_probe_suffix_runs_equal_the_whole_masked_model(cut_bytes: int) -> None:
    from onnxprune.scoring.mask_probe import MaskProbe

    dg = analyse(_net())
    probe = MaskProbe(dg, _feeds(), cut_bytes=cut_bytes)
    groups = list(dg.prunable)
    assert len(groups) > 1
    # groups in order (the dense pass in segments), then out of order and two at once (runs up to the cut)
    sets = [{int(g.slots[0]), int(g.slots[1])} for g in groups] + [{int(groups[0].slots[2])}]
    sets.append({int(groups[0].slots[0]), int(groups[-1].slots[0])})
    for removed in sets:
        for feed, (want, got) in zip(probe.feeds, probe.held_outputs(removed), strict=True):
            whole = probe._run(feed, removed)
            assert set(got) == set(whole)
            for name, value in whole.items():
                np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6)
            assert any(not np.array_equal(got[n], want[n]) for n in got)  # the removal changed something
