"""Normalisation rules: BatchNorm / InstanceNorm are per channel; LayerNorm over channels, GroupNorm,
LRN mix channels and block."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, attr, checked_prune, exercise, group_of, init, plan_removing, reasons

from onnxprune.api import analyse, prune


def conv_norm_conv(norm: str, opset: int = 17) -> onnx.ModelProto:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 6, 6))
    y = g.conv(x, 4, 8, name="c1")
    if norm == "bn":
        y = g.bn(y, 8, name="n1")
    else:
        y = g.node("InstanceNormalization", [y, g.rand("n1.scale", (8,), low=0.5), g.rand("n1.bias", (8,))],
                   name="n1")
    g.output(g.conv(g.relu(y), 8, 4, name="head"))
    return g.build()


@pytest.mark.parametrize("norm", ["bn", "in"])
def test_per_channel_norm_params_sliced(norm: str) -> None:
    model = conv_norm_conv(norm)
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 7, 4]}))
    keep = [1, 2, 3, 5, 6]
    params = ("scale", "bias", "mean", "var") if norm == "bn" else ("scale", "bias")
    for p in params:
        np.testing.assert_array_equal(init(r.model, f"n1.{p}"), init(model, f"n1.{p}")[keep])
    exercise(model)


@pytest.mark.parametrize("opset", [9, 14])
def test_batchnorm_opsets(opset: int) -> None:
    exercise(conv_norm_conv("bn", opset))


def test_bn_scale_criterion_removes_smallest_gamma() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    gamma = np.array([1.0, 0.9, 0.01, 1.1, 0.8, 0.02, 1.2, 0.7], dtype=np.float32)
    y = g.conv(x, 4, 8, name="c1")
    y = g.node("BatchNormalization", [y, g.const("gamma", gamma), g.rand("beta", (8,)), g.rand("mu", (8,)),
                                      g.rand("var", (8,), low=0.5)], name="bn")
    g.output(g.conv(g.relu(y), 8, 4, name="head"))
    model = g.build()
    r = checked_prune(model, ratio=0.25, criterion="bn-scale")
    np.testing.assert_array_equal(init(r.model, "gamma"), gamma[[0, 1, 3, 4, 6, 7]])


def test_layernorm_over_channels_blocks() -> None:
    g = Graph(opset=17)
    x = g.input("x", (1, 4, 16))
    h = g.matmul(x, 16, 16, name="proj")
    h = g.node("LayerNormalization", [h, g.rand("ln.scale", (16,), low=0.5), g.rand("ln.bias", (16,))],
               name="ln", axis=-1)
    g.output(g.matmul(h, 16, 8, name="out"))
    dg = analyse(g.build())
    grp = group_of(dg, "proj")
    assert not grp.prunable
    assert "LayerNorm over the channel axis couples all channels" in reasons(dg, "proj")


def test_layernorm_over_nchw_from_channel_axis_blocks() -> None:
    g = Graph(opset=17)
    x = g.input("x", (1, 4, 6, 6))
    y = g.conv(x, 4, 8, name="c1")
    y = g.node("LayerNormalization", [y, g.rand("ln.scale", (8, 6, 6), low=0.5)], name="ln", axis=1)
    g.output(g.conv(y, 8, 4, name="head"))
    dg = analyse(g.build())
    assert "LayerNorm over the channel axis" in reasons(dg, "c1")


def test_layernorm_over_last_spatial_axis_passes_channels() -> None:
    g = Graph(opset=17)
    x = g.input("x", (1, 4, 6, 6))
    y = g.conv(x, 4, 8, name="c1")
    y = g.node("LayerNormalization", [y, g.rand("ln.scale", (6,), low=0.5), g.rand("ln.bias", (6,))],
               name="ln", axis=-1)
    g.output(g.conv(g.relu(y), 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    exercise(model)


@pytest.mark.parametrize("opset", [21])  # GroupNormalization-18 is deprecated: onnx's checker refuses it
def test_group_normalization_prunes_whole_groups(opset: int) -> None:
    """Scale/bias are per channel from opset 21; num_groups follows the kept groups."""
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 6, 6))
    y = g.conv(x, 4, 8, name="c1")
    n = 2 if opset == 18 else 8
    y = g.node("GroupNormalization", [y, g.rand("gn.scale", (n,), low=0.5), g.rand("gn.bias", (n,))],
               name="gn", num_groups=2)
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    grp = group_of(dg, "c1")
    assert grp.prunable and grp.size == 2, "the four channels of each group form one slot"
    # onnx 1.23 cannot type GroupNormalization-21's output even in the original model, so this
    # checks the oracle and the checker rather than strict shape inference (checked_prune).
    result = prune(model, plan=plan_removing(dg, {"c1": [1]}), verify=True, dg=dg)
    assert result.verify is not None and result.verify.ok
    pruned = result.model
    onnx.checker.check_model(pruned)
    assert attr(pruned, "gn", "num_groups") == 1
    assert init(pruned, "gn.scale").shape == ((1,) if opset == 18 else (4,))


def test_lrn_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("LRN", [g.relu(g.conv(x, 4, 8, name="c1"))], name="lrn", size=3)
    g.output(g.conv(y, 8, 4, name="head"))
    dg = analyse(g.build())
    assert "LRN mixes neighbouring channels" in reasons(dg, "c1")


def test_instance_norm_on_spatial_grid_blocks() -> None:
    """A channel track moved onto a spatial axis meets InstanceNorm's per-sample statistics."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("Transpose", [g.conv(x, 4, 8, name="c1")], name="t", perm=[0, 2, 1, 3])  # (1, 6, 8, 6)
    y = g.node("InstanceNormalization", [y, g.rand("s", (6,), low=0.5), g.rand("b", (6,))], name="inorm")
    y = g.node("Transpose", [y], name="t_back", perm=[0, 2, 1, 3])
    g.output(g.conv(y, 8, 4, name="head"))
    dg = analyse(g.build())
    assert "normalisation statistics mix the positions of this axis" in reasons(dg, "c1")
