"""One initializer read by several nodes: pruning one reader never changes another.

Exports that deduplicate constants share one zero bias between layers; tied weights share one
weight. A shared weight couples its readers' channels (it stays one tensor); any other shared
constant is sliced for each reader that needs a slice, and readers that are not pruned (or not
channel members at all) keep reading the original (passes/prune.py, `ApplyPlan._slice_members`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph, checked_prune, group_of, init, node_const, outputs_of, plan_removing

from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.errors import EXIT_INTERNAL, InternalError
from onnxprune.graph.apply import ApplyContext
from onnxprune.io.inputs import random_inputs
from onnxprune.passes.prune import ApplyPlan

CONV = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}


def _two_convs_one_bias(*, blocked_b: bool = False) -> onnx.ModelProto:
    """Convs a and b read one zero bias; a feeds a head conv, b another one (or a graph output)."""
    g = Graph()
    x = g.input("x", (1, 4, 8, 8))
    zero = g.const("zero", np.zeros(8, np.float32))
    a = g.node("Conv", [x, g.rand("wa", (8, 4, 3, 3)), zero], name="a", **CONV)
    b = g.node("Conv", [x, g.rand("wb", (8, 4, 3, 3)), zero], name="b", **CONV)
    g.output(g.conv(g.relu(a), 8, 4, name="ha"))
    g.output(b if blocked_b else g.conv(g.relu(b), 8, 4, name="hb"))
    return g.build()


def _no_verify(model: onnx.ModelProto, tmp_path: Path, *args: str) -> onnx.ModelProto:
    """`prune --no-verify` through the CLI; the written model, checked to load and run in ORT."""
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, str(src))
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--no-verify", "--no-progress", "--round-to", "1",
                                  *args])
    assert r.exit_code == 0, r.stderr
    pruned = onnx.load(str(out))
    outputs_of(pruned, random_inputs(pruned))  # loads and runs in ONNX Runtime
    return pruned


def test_a_shared_zero_bias_does_not_couple_its_convs(tmp_path: Path) -> None:
    model = _two_convs_one_bias()
    dg = analyse(model)
    assert group_of(dg, "a").sources == ["a"] and group_of(dg, "b").sources == ["b"]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"a": [0, 1, 2], "b": [5]}))
    assert node_const(r.model, "a", 2).shape == (5,) and node_const(r.model, "b", 2).shape == (7,)
    pruned = _no_verify(model, tmp_path, "--ratio", "0.5")
    assert node_const(pruned, "a", 2).shape == node_const(pruned, "b", 2).shape == (4,)


def test_readers_that_keep_everything_keep_the_original(tmp_path: Path) -> None:
    """b reaches a graph output (blocked): a still prunes, and b reads the whole bias."""
    model = _two_convs_one_bias(blocked_b=True)
    dg = analyse(model)
    assert group_of(dg, "a").prunable and not group_of(dg, "b").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"a": [1, 3]}))
    assert node_const(r.model, "a", 2).shape == (6,)
    assert r.model.graph.node[[n.name for n in r.model.graph.node].index("b")].input[2] == "zero"
    np.testing.assert_array_equal(init(r.model, "zero"), np.zeros(8, np.float32))
    _no_verify(model, tmp_path, "--ratio", "0.5")


def test_a_bias_also_read_by_an_unrelated_add(tmp_path: Path) -> None:
    """The Add is not a channel member of a's group: it keeps reading the full bias."""
    g = Graph()
    x, v = g.input("x", (1, 4, 8, 8)), g.input("v", (1, 8))
    bias = g.rand("bias", (8,))
    a = g.node("Conv", [x, g.rand("w", (8, 4, 3, 3)), bias], name="a", **CONV)
    g.output(g.conv(g.relu(a), 8, 4, name="head"))
    g.output(g.node("Add", [v, bias], name="other"))
    model = g.build()
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"a": [0, 4]}))
    np.testing.assert_array_equal(node_const(r.model, "a", 2), np.delete(init(model, "bias"), [0, 4]))
    np.testing.assert_array_equal(node_const(r.model, "other", 1), init(model, "bias"))
    pruned = _no_verify(model, tmp_path, "--ratio", "0.5")
    feed = random_inputs(model, seed=3)
    np.testing.assert_array_equal(outputs_of(pruned, feed)["other"], outputs_of(model, feed)["other"])


def test_tied_weights_stay_tied() -> None:
    """Two convs with one weight (a Siamese pair): their channels are coupled, the weight stays one tensor."""
    g = Graph()
    x, y = g.input("x", (1, 4, 8, 8)), g.input("y", (1, 4, 8, 8))
    w = g.rand("w", (16, 4, 3, 3))
    a = g.node("Conv", [x, w], name="a", **CONV)
    b = g.node("Conv", [y, w], name="b", **CONV)
    g.output(g.conv(g.node("Add", [g.relu(a), g.relu(b)], name="sum"), 16, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert sorted(group_of(dg, "a").sources) == ["a", "b"]
    r = checked_prune(model, dg=dg, ratio=0.5)
    names = {n.name: n for n in r.model.graph.node}
    assert names["a"].input[1] == names["b"].input[1] and node_const(r.model, "a", 1).shape[0] == 8


def test_a_weight_read_along_different_axes_is_copied() -> None:
    """One square matrix as a MatMul weight (K×N) and a Gemm weight with transB (N×K): each reader
    loses other rows and columns, so each gets its own slice."""
    g = Graph()
    x = g.input("x", (1, 8))
    w = g.rand("w", (8, 8))
    h = g.relu(g.node("MatMul", [x, w], name="m1"))
    h2 = g.relu(g.node("Gemm", [h, w], name="m2", transB=1))
    g.output(g.gemm(h2, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"m1": [0, 1], "m2": [6]}))
    m1, m2 = node_const(r.model, "m1", 1), node_const(r.model, "m2", 1)
    assert m1.shape == (8, 6) and m2.shape == (7, 6)
    exact = init(model, "w")
    np.testing.assert_array_equal(m1, exact[:, 2:])
    np.testing.assert_array_equal(m2, np.delete(exact, 6, axis=0)[:, 2:])


def test_an_internal_inconsistency_is_not_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pruned model that fails its own checks is onnxprune's bug: its own exit code, not 2 (bad input)."""
    g = Graph()
    g.output(g.matmul(g.relu(g.matmul(g.input("x", (1, 8)), 8, 8, name="m1")), 8, 4, name="m2"))
    model = g.build()
    masks = ApplyPlan._reader_masks

    def forget_m2(self: ApplyPlan, actx: ApplyContext) -> dict[str, dict[str, dict[int, np.ndarray]]]:
        out = masks(self, actx)  # the bug: m2's weight keeps its 8 input rows
        for per_node in out.values():
            per_node.pop("m2", None)
        return out

    monkeypatch.setattr(ApplyPlan, "_reader_masks", forget_m2)
    with pytest.raises(InternalError, match="internal error .*pruned model is invalid"):
        prune(model, ratio=0.5)
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, str(src))
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--no-verify", "--no-progress", "--round-to", "1"])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.exit_code == EXIT_INTERNAL != 2 and len(lines) == 1 and "please report" in lines[0], r.stderr
    assert not out.exists()
