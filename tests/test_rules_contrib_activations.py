"""ONNX Runtime's fused activations (com.microsoft FastGelu, BiasGelu, Gelu, QuickGelu): channel by
channel, the bias sliced with the channels; ONNX Runtime runs every graph here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, checked_prune, exercise, group_of, init, node_const, plan_removing

from onnxprune.api import analyse

MS = "com.microsoft"


def mlp(op: str, *, bias: bool = True, **attrs: object) -> onnx.ModelProto:
    """x -> up (16 -> 24) -> op -> down (24 -> 8): the 24 hidden channels go through the activation."""
    g = Graph(opset=17)
    x = g.input("x", (2, 5, 16))
    h = g.matmul(x, 16, 24, name="up")
    inputs = [h, g.rand("act.bias", (24,))] if bias else [h]
    h = g.node(op, inputs, name="act", domain=MS, **attrs)
    g.output(g.matmul(h, 24, 8, name="down"))
    return g.build()


@pytest.mark.parametrize(("op", "bias"), [("FastGelu", True), ("FastGelu", False), ("BiasGelu", True),
                                          ("Gelu", False), ("QuickGelu", False)])
def test_activation_passes_channels_and_slices_its_bias(op: str, bias: bool) -> None:
    model = mlp(op, bias=bias, **({"alpha": 1.702} if op == "QuickGelu" else {}))
    dg = analyse(model)
    assert group_of(dg, "up").prunable and group_of(dg, "up").size == 24
    removed = [0, 5, 23]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"up": removed}))
    keep = [i for i in range(24) if i not in removed]
    np.testing.assert_array_equal(node_const(r.model, "up", 1), init(model, "up.w")[:, keep])
    np.testing.assert_array_equal(node_const(r.model, "down", 1), init(model, "down.w")[keep])
    if bias:
        np.testing.assert_array_equal(node_const(r.model, "act", 1), init(model, "act.bias")[keep])
    exercise(model)
