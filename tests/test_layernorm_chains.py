"""LayerNorm written out op by op (TF/JAX via tf2onnx, TorchScript below opset 17): recognised, fused into
one LayerNormalization from opset 17 (outputs within 1e-5 of the chain's), and below 17 kept as written
and analysed as one norm."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
import pytest
from cli_run import invoke
from graphs import Graph, group_of, init, node_const, outputs_of, plan_removing, reasons
from zoo import zoo_entry

from onnxprune.api import analyse, prune
from onnxprune.graph.layernorm_chains import find_layernorm_chains
from onnxprune.graph.view import GraphView
from onnxprune.io.inputs import random_inputs
from onnxprune.passes.normalize import Normalize

TRANSFORMERS = Path(__file__).resolve().parent.parent / "models" / "transformers"
sys.path.insert(0, str(TRANSFORMERS))
from zookit import make_feeds  # noqa: E402

LN_REASON = "LayerNorm over the channel axis couples all channels"


def chain_model(form: str, *, opset: int, affine: bool = True, leak: bool = False) -> onnx.ModelProto:
    """x -> a (16 -> 12) -> LayerNorm written out in `form` -> head (12 -> 8).

    form: "torch" (Sub, Pow, Div, · gamma, + beta), "reciprocal" (Mul(d, d) and d · 1/std) or "tf"
    (GlobalAveragePool means, y = x · m + (beta - mean · m), m = gamma / std). leak: the mean is also a
    graph output (so the chain is not closed)."""
    g = Graph(opset=opset)
    x = g.matmul(g.input("x", (2, 5, 16)), 16, 12, name="a")
    gamma, beta = g.rand("gamma", (12,), low=0.5), g.rand("beta", (12,))
    eps = g.const("eps", np.float32(1e-5))

    def mean(t: str, name: str) -> str:
        if form == "tf":
            return g.node("GlobalAveragePool", [t], name=name)
        if opset >= 18:
            return g.node("ReduceMean", [t, g.ints(f"{name}.axes", [-1])], name=name)
        return g.node("ReduceMean", [t], name=name, axes=[-1])

    mu = mean(x, "mean")
    d = g.node("Sub", [x, mu], name="centered")
    sq = g.node("Pow", [d, g.const("two", np.float32(2.0))], name="sq") if form == "torch" else \
        g.node("Mul", [d, d], name="sq")
    std = g.node("Sqrt", [g.node("Add", [mean(sq, "var"), eps], name="var_eps")], name="std")
    if form == "tf":
        m = g.node("Mul", [g.node("Reciprocal", [std], name="rstd"), gamma], name="m")
        shift = g.node("Sub", [beta, g.node("Mul", [mu, m], name="mean_m")], name="shift")
        y = g.node("Add", [g.node("Mul", [x, m], name="x_m"), shift], name="ln_out")
    else:
        n = g.node("Div", [d, std], name="normed") if form == "torch" else \
            g.node("Mul", [d, g.node("Reciprocal", [std], name="rstd")], name="normed")
        y = g.node("Add", [g.node("Mul", [n, gamma], name="scaled"), beta], name="ln_out") if affine else n
    g.output(g.matmul(y, 12, 8, name="head"))
    if leak:
        g.output(mu)
    return g.build()


FORMS = ["torch", "reciprocal", "tf"]


@pytest.mark.parametrize("form", FORMS)
def test_chains_are_found_with_their_parameters(form: str) -> None:
    view = GraphView(chain_model(form, opset=15))
    chains = find_layernorm_chains(view, lambda t: 3)
    assert len(chains) == 1
    c = chains[0]
    assert (c.input, c.output, c.nodes[-1]) == ("a", "ln_out", "ln_out")
    assert c.scale is not None and c.scale[0] == "gamma" and c.bias is not None and c.bias[0] == "beta"
    assert c.epsilon == pytest.approx(1e-5)
    assert {"mean", "var", "std"} <= set(c.nodes) and "a" not in c.nodes and "head" not in c.nodes


def test_a_chain_read_from_outside_is_not_a_layernorm() -> None:
    assert find_layernorm_chains(GraphView(chain_model("torch", opset=17, leak=True)), lambda t: 3) == []
    notes = Normalize()(chain_model("torch", opset=17, leak=True)).notes
    assert not any("LayerNorm" in n for n in notes)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("opset", [17, 18])
def test_from_opset_17_a_chain_becomes_one_layernormalization(form: str, opset: int) -> None:
    model = chain_model(form, opset=opset)
    result = Normalize()(model)
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == ["MatMul", "LayerNormalization", "MatMul"]
    assert "fuse-layernorm: 1 LayerNorm chains fused into LayerNormalization" in result.notes
    onnx.checker.check_model(result.model, full_check=True)
    feed = random_inputs(model, seed=3)
    np.testing.assert_allclose(outputs_of(result.model, feed)["head"], outputs_of(model, feed)["head"], atol=1e-5)


def test_a_chain_without_gamma_and_beta_gets_a_unit_scale() -> None:
    model = chain_model("torch", opset=17, affine=False)
    fused = Normalize()(model).model
    ln = next(n for n in fused.graph.node if n.op_type == "LayerNormalization")
    np.testing.assert_array_equal(init(fused, ln.input[1]), np.ones(12, np.float32))
    feed = random_inputs(model, seed=3)
    np.testing.assert_allclose(outputs_of(fused, feed)["head"], outputs_of(model, feed)["head"], atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_below_opset_17_the_chain_is_kept_and_analysed_as_one_norm(form: str) -> None:
    model = chain_model(form, opset=15)
    result = Normalize()(model)
    assert [n.op_type for n in result.model.graph.node] == [n.op_type for n in model.graph.node]
    assert any("1 LayerNorm chains recognised (opset 15 has no LayerNormalization" in n for n in result.notes)
    dg = analyse(model)
    assert not group_of(dg, "a").prunable and LN_REASON in reasons(dg, "a")
    assert "ReduceMean" not in reasons(dg, "a") and "GlobalAveragePool" not in reasons(dg, "a")
    approx = analyse(model, approximate=["layernorm"])
    assert group_of(approx, "a").prunable and group_of(approx, "a").approximate


@pytest.mark.parametrize("form", FORMS)
def test_a_pruned_chain_computes_what_the_pruned_layernormalization_does(form: str) -> None:
    """Under --approximate layernorm the chain kept as written (opset 15) loses the same channels, and gives
    the same outputs, as its fused LayerNormalization (opset 17): gamma and beta are sliced where the chain
    reads them."""
    outs = []
    for opset in (15, 17):
        model = chain_model(form, opset=opset)
        dg = analyse(model, approximate=["layernorm"])
        r = prune(model, dg=dg, plan=plan_removing(dg, {"a": [0, 4, 9]}))
        if opset == 15:
            reader = "m" if form == "tf" else "scaled"
            np.testing.assert_array_equal(node_const(r.model, reader, 1), init(model, "gamma")[[1, 2, 3, 5, 6, 7, 8,
                                                                                                10, 11]])
        outs.append(outputs_of(r.model, random_inputs(model, seed=5))["head"])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


@pytest.mark.parametrize("path", [zoo_entry("transformer_ts").path, TRANSFORMERS / "bert_keras_tf2onnx.onnx"],
                         ids=["transformer_ts", "bert_keras_tf2onnx"])
def test_real_exports_are_recognised_and_fuse_within_1e_5(path: Path) -> None:
    """TorchScript opset 13 (Pow/Div chains) and tf2onnx opset 15 (GlobalAveragePool/Reciprocal chains): all
    5 LayerNorms are recognised; converted to opset 17 they fuse, and the outputs move by less than 1e-5."""
    model = onnx.load(str(path))
    notes = Normalize()(model).notes
    assert any("5 LayerNorm chains recognised" in n for n in notes), notes
    upgraded = onnx.version_converter.convert_version(model, 17)
    fused = Normalize()(upgraded)
    assert sum(n.op_type == "LayerNormalization" for n in fused.model.graph.node) == 5
    assert not any(n.op_type in ("Sqrt", "Reciprocal") for n in fused.model.graph.node)
    feed = make_feeds(_manifest_inputs(path), _manifest_dims(path)) if path.parent == TRANSFORMERS else \
        random_inputs(upgraded, seed=1)
    want, got = outputs_of(upgraded, feed), outputs_of(fused.model, feed)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=1e-5)


def _manifest_entry(path: Path) -> dict[str, object]:
    import json

    entries = json.loads((TRANSFORMERS / "manifest.json").read_text())["models"]
    return next(e for e in entries if e["file"] == path.name)


def _manifest_inputs(path: Path) -> list[dict[str, object]]:
    return _manifest_entry(path)["inputs"]  # type: ignore[return-value]


def _manifest_dims(path: Path) -> dict[str, int]:
    return _manifest_entry(path)["dims"]  # type: ignore[return-value]


def test_tanh_gelu_chains_are_channel_wise_already() -> None:
    """tf2onnx writes GELU as 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): Pow/Mul/Add/Tanh by scalars, each
    channel by channel, so the channels pass exactly and no fusion is needed to prune through it."""
    g = Graph(opset=15)
    x = g.matmul(g.input("x", (2, 5, 16)), 16, 24, name="up")
    cube = g.node("Mul", [g.node("Pow", [x, g.const("three", np.float32(3.0))]), g.const("k", np.float32(0.044715))])
    inner = g.node("Mul", [g.node("Add", [x, cube]), g.const("c", np.float32(np.sqrt(2 / np.pi)))])
    gate = g.node("Add", [g.node("Tanh", [inner]), g.const("one", np.float32(1.0))])
    y = g.node("Mul", [g.node("Mul", [x, g.const("half", np.float32(0.5))]), gate])
    g.output(g.matmul(y, 24, 8, name="down"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "up").prunable and not group_of(dg, "up").approximate
    r = prune(model, dg=dg, plan=plan_removing(dg, {"up": [3, 17]}), verify=True)
    assert r.verify is not None and r.verify.ok and r.verify.masked_edges > 0


def test_inspect_says_what_normalisation_recognised(tmp_path: Path) -> None:
    src = tmp_path / "chain.onnx"
    onnx.save(chain_model("tf", opset=15), str(src))
    code, out, err = invoke("inspect", str(src))
    assert code == 0, err
    assert "normalise: fuse-layernorm: 1 LayerNorm chains recognised (opset 15 has no LayerNormalization" in out
    code, out, err = invoke("inspect", "--json", str(src))
    assert code == 0, err
    assert any("1 LayerNorm chains recognised" in n for n in json.loads(out)["normalise"])
