"""Least-squares reconstruction of ConvTranspose layers: rows that reproduce ONNX Runtime, and exact recovery."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import pytest
from graphs import Graph, get_node, set_init, source_roots
from onnx import numpy_helper

from onnxprune.api import analyse
from onnxprune.calib.collect import collect_grams
from onnxprune.calib.convtranspose import padded_input, transpose_geometry, transpose_rows
from onnxprune.io.runtime import run
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import reconstruct
from onnxprune.recovery.layer_weights import LayerWeights, read_layer, write_layer
from onnxprune.recovery.layers import plan_layers
from onnxprune.recovery.solve import squared_error

# name -> (input shape [N, C, spatial...], ConvTranspose keyword arguments for Graph.conv_transpose)
GEOMETRIES: dict[str, tuple[tuple[int, ...], dict[str, object]]] = {
    "k2s2": ((2, 4, 5, 7), {"k": 2, "stride": 2}),  # PP-OCR's upsampler
    "k3s2-pad1-outpad1": ((2, 4, 5, 7), {"k": 3, "stride": 2, "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    "k4s2-pad1": ((2, 4, 5, 7), {"k": 4, "stride": 2, "pads": [1, 1, 1, 1]}),
    "k3s1-dil2-asym": ((2, 4, 5, 7), {"k": 3, "stride": 1, "dilations": [2, 2], "pads": [1, 2, 3, 0]}),
    "k3-strides2x3-outpad": ((2, 4, 5, 7), {"k": 3, "strides": [2, 3], "pads": [0, 1, 1, 0],
                                            "output_padding": [1, 2]}),
    "group2": ((2, 4, 5, 7), {"k": 3, "stride": 2, "group": 2, "pads": [1, 1, 1, 1]}),
    "depthwise": ((2, 4, 5, 7), {"k": 2, "stride": 2, "group": 4}),
    "same-upper": ((2, 4, 5, 7), {"k": 3, "stride": 2, "auto_pad": "SAME_UPPER"}),
    "same-lower": ((2, 4, 5, 7), {"k": 3, "stride": 2, "auto_pad": "SAME_LOWER"}),
    "valid-no-bias": ((2, 4, 5, 7), {"k": 3, "stride": 2, "auto_pad": "VALID", "bias": False}),
    "1d": ((2, 4, 9), {"k": 3, "stride": 2, "rank": 1, "pads": [1, 0], "output_padding": [1]}),
    "1d-group2-dil": ((2, 4, 9), {"k": 2, "stride": 3, "rank": 1, "group": 2, "dilations": [2]}),
}


def _single(shape: tuple[int, ...], kwargs: Mapping[str, object], cout: int = 8) -> onnx.ModelProto:
    g = Graph()
    x = g.input("x", shape)
    g.output(g.conv_transpose(x, shape[1], cout, name="up", **kwargs))  # type: ignore[arg-type]
    return g.build()


def _weight_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    return tuple(int(d) for d in next(t for t in model.graph.initializer if t.name == "up.w").dims)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_rows_times_weights_are_the_runtime_output(geometry: str) -> None:
    """X_g · W_gᵀ + b_g over every output position equals ONNX Runtime's ConvTranspose output."""
    shape, kwargs = GEOMETRIES[geometry]
    model = _single(shape, kwargs)
    node = get_node(model, "up")
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    y = run(model, {"x": x})["up"]
    geo = transpose_geometry(node, _weight_shape(model))
    hw = (1, shape[2]) if len(shape) == 3 else (shape[2], shape[3])
    y4 = y[:, :, None, :] if y.ndim == 3 else y
    assert geo.output_hw(hw) == y4.shape[2:]
    ni, hi, wi = (a.ravel() for a in np.meshgrid(*(np.arange(s) for s in (y4.shape[0], *y4.shape[2:])),
                                                 indexing="ij"))
    rows = transpose_rows(padded_input(x), ni, hi, wi, geo, geo.resolve_pads(hw))
    lw = read_layer(model, node)
    pred = np.concatenate([xg @ w.T + b for xg, w, b in zip(rows, lw.weights, lw.biases, strict=True)], axis=1)
    np.testing.assert_allclose(pred, y4[ni, :, hi, wi], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_gram_of_the_unchanged_layer_has_no_error(geometry: str) -> None:
    """Through collect_grams (with row sampling): the layer's own weights fit its output exactly."""
    shape, kwargs = GEOMETRIES[geometry]
    model = _single(shape, kwargs)
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(2)]
    lg = collect_grams(model, feeds, ["up"], targets={"up": "up"}, max_rows=50)["up"]
    lw = read_layer(model, get_node(model, "up"))
    assert len(lg.groups) == len(lw.weights)
    for g, w, b in zip(lg.groups, lw.weights, lw.biases, strict=True):
        err, yy = squared_error(g, w, b)
        assert yy > 0 and err / yy < 1e-10


@pytest.mark.parametrize("geometry", ["k3s2-pad1-outpad1", "group2", "1d-group2-dil"])
def test_read_and_write_round_trip(geometry: str) -> None:
    shape, kwargs = GEOMETRIES[geometry]
    model = _single(shape, kwargs)
    node = get_node(model, "up")
    before = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "up.w")).copy()
    lw = read_layer(model, node)
    write_layer(model, node, LayerWeights([w * 2 for w in lw.weights], lw.biases, lw.has_bias))
    after = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "up.w"))
    assert after.dtype == np.float32 and after.shape == before.shape
    np.testing.assert_allclose(after, 2 * before, rtol=1e-6)


def _feeds(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _out_error(model: onnx.ModelProto, dense: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> float:
    out = dense.graph.output[0].name
    return max(float(np.linalg.norm(run(model, f)[out] - run(dense, f)[out]) / np.linalg.norm(run(dense, f)[out]))
               for f in feeds)


def _redundant_upsampler(kwargs: Mapping[str, object], *, rank: int = 2) -> onnx.ModelProto:
    """x[3] -> a (1x1 conv, 3->8, linear) -> up (ConvTranspose 8->6): a's channel 3 = c0 + c1 and
    channel 7 = c4 - c5 (one slot when `up` is grouped, which couples index 3 of both groups)."""
    g = Graph()
    x = g.input("x", ("N", 3, *([5] * rank)))
    g.output(g.conv_transpose(g.conv(x, 3, 8, k=1, rank=rank, name="a"), 8, 6, rank=rank, name="up",
                              **kwargs))  # type: ignore[arg-type]
    m = g.build()

    def redundant(w: np.ndarray) -> np.ndarray:
        w[3], w[7] = w[0] + w[1], w[4] - w[5]
        return w

    set_init(m, "a.w", redundant)
    set_init(m, "a.b", redundant)
    return m


@pytest.mark.parametrize(("kwargs", "rank"), [
    ({"k": 2, "stride": 2}, 2),
    ({"k": 3, "stride": 2, "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, 2),
    ({"k": 3, "stride": 2, "group": 2, "dilations": [2, 2]}, 2),
    ({"k": 3, "stride": 2, "pads": [1, 1], "output_padding": [1]}, 1),
])
def test_redundant_channel_is_recovered_exactly(kwargs: dict[str, object], rank: int) -> None:
    dg = analyse(_redundant_upsampler(kwargs, rank=rank))
    removed = source_roots(dg, "a", [3]) | source_roots(dg, "a", [7])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    shape = (8, 3, *([5] * rank))
    feeds = _feeds(shape)
    assert _out_error(pruned, dg.model, feeds) > 0.05
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, damp=1e-10)
    assert [(lf.node, lf.op_type, lf.fitted, lf.direct) for lf in res.layers] == [("up", "ConvTranspose", True, True)]
    assert res.layers[0].rel_error_after < 1e-9 and not res.skipped and not res.reverted
    assert _out_error(res.model, dg.model, _feeds(shape, seed=5)) < 1e-5  # unseen inputs too
    onnx.checker.check_model(res.model)


def test_pruned_output_channels_are_targeted_on_axis_1() -> None:
    """up itself loses output channels (its target is the dense output's kept channels on axis 1)."""
    g = Graph()
    x = g.input("x", ("N", 3, 5, 5))
    up = g.conv_transpose(g.conv(x, 3, 8, k=1, name="a"), 8, 6, k=3, stride=2, pads=[1, 1, 1, 1],
                          output_padding=[1, 1], name="up")
    g.output(g.conv(g.relu(up), 6, 2, name="c"))
    m = g.build()
    set_init(m, "a.w", lambda w: np.concatenate([w[:7], w[:1] - w[1:2]]))
    set_init(m, "a.b", lambda b: np.append(b[:7], b[0] - b[1]))
    dg = analyse(m)
    removed = source_roots(dg, "a", [7]) | source_roots(dg, "up", [1, 4])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    layers, skipped = plan_layers(pruned, dg, removed)
    assert [(lay.node, lay.wave) for lay in layers] == [("up", 0), ("c", 1)] and not skipped
    assert layers[0].out_keep is not None and list(np.flatnonzero(~layers[0].out_keep)) == [1, 4]
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=_feeds((8, 3, 5, 5)), damp=1e-10)
    up_fit = res.layers[0]
    assert up_fit.node == "up" and up_fit.fitted and up_fit.rel_error_after < 1e-9
    assert all(lf.rel_error_after <= lf.rel_error_before for lf in res.layers)


def test_output_shape_attribute_is_skipped_and_listed() -> None:
    g = Graph()
    x = g.input("x", ("N", 3, 4, 4))
    g.output(g.conv_transpose(g.relu(g.conv(x, 3, 8, name="a")), 8, 4, k=3, name="up", output_shape=[8, 8]))
    dg = analyse(g.build())
    removed = source_roots(dg, "a", [0, 1, 2])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=_feeds((4, 3, 4, 4)))
    assert not res.layers and len(res.skipped) == 1
    assert res.skipped[0].startswith("up: ConvTranspose") and "output_shape" in res.skipped[0]
    assert res.model.SerializeToString() == pruned.SerializeToString()
