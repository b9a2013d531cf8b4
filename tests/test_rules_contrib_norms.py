"""ONNX Runtime's fused norms: SkipLayerNormalization, SkipSimplifiedLayerNormalization (com.microsoft),
SimplifiedLayerNormalization (ONNX Runtime's, in the default domain) and EmbedLayerNormalization. They
block the hidden channels like LayerNormalization, or let them through as approximate under
`--approximate layernorm` (`rmsnorm` for the simplified ones, which keep their denominator); the skip
input couples like a residual Add; every graph runs in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke
from graphs import Graph, group_of, init, node_const, outputs_of, plan_removing, reasons

from onnxprune.api import analyse, prune
from onnxprune.io.input_values import infer_rules
from onnxprune.io.inputs import random_inputs
from onnxprune.io.model_io import check_kind, save_model

MS = "com.microsoft"
LN_REASON = "LayerNorm over the channel axis couples all channels"
RMS_REASON = "RMSNorm over the channel axis couples all channels"
KIND = {"SkipLayerNormalization": ("layernorm", LN_REASON), "SkipSimplifiedLayerNormalization": ("rmsnorm", RMS_REASON)}
INT32 = onnx.TensorProto.INT32


def skip_norm(op: str, *, outputs: int = 1, bias: bool = True) -> onnx.ModelProto:
    """a(x) and s(x) meet in a skip norm (input, skip); its output feeds `head`, its sum (output 3) `side`."""
    g = Graph(opset=17)
    x = g.input("x", (2, 5, 16))
    inputs = [g.matmul(x, 16, 12, name="a"), g.matmul(x, 16, 12, name="s"), g.rand("gamma", (12,), low=0.5)]
    if op == "SkipLayerNormalization":
        inputs.append(g.rand("beta", (12,)))
    if bias:
        inputs.append(g.rand("bias", (12,)))
    outs = g.node_multi(op, inputs, name="norm", domain=MS, n_out=outputs, epsilon=1e-5)
    g.output(g.matmul(outs[0], 12, 8, name="head"))
    if outputs == 4:
        g.output(outs[1])  # mean and inv_std_var: [2, 5, 1], no channel
        g.output(outs[2])
        g.output(g.matmul(outs[3], 12, 8, name="side"))
    return g.build()


@pytest.mark.parametrize("op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_skip_norm_couples_input_and_skip_and_blocks_like_layernorm(op: str) -> None:
    kind, reason = KIND[op]
    dg = analyse(skip_norm(op))
    grp = group_of(dg, "a")
    assert grp.sources == ["a", "s"] and not grp.prunable and grp.kind == "hidden"
    assert reason in reasons(dg, "a") and f"--approximate {kind}" in reasons(dg, "a")
    other = "layernorm" if kind == "rmsnorm" else "rmsnorm"
    assert not group_of(analyse(skip_norm(op), approximate=[other]), "a").prunable


@pytest.mark.parametrize("op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
@pytest.mark.parametrize("bias", [True, False])
def test_skip_norm_under_approximate_slices_every_parameter(op: str, bias: bool) -> None:
    kind, reason = KIND[op]
    model = skip_norm(op, outputs=4, bias=bias)
    dg = analyse(model, approximate=[kind])
    grp = group_of(dg, "a")
    assert grp.prunable and grp.approximate and reason in grp.approximate[0]
    r = prune(model, dg=dg, plan=plan_removing(dg, {"a": [1, 7]}), verify=True)
    assert r.verify is not None and r.verify.ok
    keep = [i for i in range(12) if i not in (1, 7)]
    # An RMSNorm keeps its denominator: gamma · sqrt(12/10), epsilon · 12/10 (rules/norm.py).
    scale = np.float32(np.sqrt(12 / 10)) if kind == "rmsnorm" else np.float32(1)
    np.testing.assert_allclose(node_const(r.model, "norm", 2), init(model, "gamma")[keep] * scale, rtol=1e-6)
    eps = next(a.f for n in r.model.graph.node if n.name == "norm" for a in n.attribute if a.name == "epsilon")
    assert eps == pytest.approx(1e-5 * (12 / 10 if kind == "rmsnorm" else 1))
    params = ["beta", "bias"] if op == "SkipLayerNormalization" else ["bias"]
    for i, name in enumerate(params[: len(params) if bias else len(params) - 1], start=3):
        np.testing.assert_array_equal(node_const(r.model, "norm", i), init(model, name)[keep])
    # The sum output carries the same channels exactly: its reader loses their rows.
    np.testing.assert_array_equal(node_const(r.model, "side", 1), init(model, "side.w")[keep])
    feed = random_inputs(model)
    got, want = outputs_of(r.model, feed), outputs_of(model, feed)
    assert got["head"].shape == want["head"].shape and np.isfinite(got["head"]).all()


def test_simplified_layernorm_in_the_default_domain_is_saved_after_onnx_runtime_loads_it(tmp_path: Path) -> None:
    """ONNX Runtime defines SimplifiedLayerNormalization in the default domain; the ONNX checker rejects it,
    so the model is checked by loading it in ONNX Runtime (and the checker on the rest)."""
    g = Graph(opset=17)
    x = g.input("x", (2, 5, 16))
    h = g.node("SimplifiedLayerNormalization", [g.matmul(x, 16, 12, name="a"), g.rand("gamma", (12,), low=0.5)],
               name="rms", axis=-1, epsilon=1e-6)
    h = g.matmul(g.node("Relu", [g.matmul(h, 12, 24, name="up")]), 24, 8, name="down")
    g.output(h)
    model = g.build()
    assert "the checker cannot check ai.onnx::SimplifiedLayerNormalization" in check_kind(model)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    dg = analyse(model)
    assert RMS_REASON in reasons(dg, "a") and group_of(dg, "up").prunable
    r = prune(model, dg=dg, ratio=0.5, verify=True)
    assert r.verify is not None and r.verify.ok
    save_model(r.model, tmp_path / "out.onnx")
    assert onnx.load(str(tmp_path / "out.onnx")).graph.node[1].op_type == "SimplifiedLayerNormalization"
    # The CLI says which check ran.
    src = tmp_path / "in.onnx"
    onnx.save(model, str(src))
    code, out, err = invoke("prune", str(src), "-o", str(tmp_path / "cli.onnx"), "--ratio", "0.5", "--round-to", "1")
    assert code == 0, err
    assert "written after the ONNX checker on the standard ops, and loading in ONNX Runtime" in out


def test_a_broken_contrib_model_is_not_written(tmp_path: Path) -> None:
    """The ONNX checker skips com.microsoft ops: ONNX Runtime must reject a wrong one before it is written
    (here a double gamma for float activations, which ONNX Runtime's type check refuses)."""
    model = skip_norm("SkipLayerNormalization")
    norm = next(n for n in model.graph.node if n.name == "norm")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(12, np.float64), "gamma64"))
    norm.input[2] = "gamma64"
    onnx.checker.check_model(model)  # the ONNX checker cannot tell
    with pytest.raises(Exception, match="refusing to write .*ONNX Runtime cannot load it"):
        save_model(model, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def embed(*, segments: bool = True) -> onnx.ModelProto:
    """BERT's fused embedding: word (30 rows) + position (8) + segment (2) tables of 12, then LayerNorm."""
    g = Graph(opset=17)
    ids = g.input("input_ids", (2, 5), elem=INT32)
    inputs = [ids, g.input("segment_ids", (2, 5), elem=INT32) if segments else "",
              g.rand("word", (30, 12)), g.rand("position", (8, 12)), g.rand("segment", (2, 12)) if segments else "",
              g.rand("gamma", (12,), low=0.5), g.rand("beta", (12,)), g.input("mask", (2, 5), elem=INT32)]
    outs = g.node_multi("EmbedLayerNormalization", inputs, name="emb", domain=MS, n_out=3, epsilon=1e-12)
    g.output(g.matmul(outs[0], 12, 8, name="head"))
    g.output(outs[1], elem=INT32)
    g.output(g.matmul(outs[2], 12, 8, name="side"))
    return g.build()


def test_embed_layernorm_inputs_get_valid_values() -> None:
    rules = {k: str(v) for k, v in infer_rules(embed()).items()}
    assert rules == {"input_ids": "index below 30", "segment_ids": "index below 2", "mask": "ones"}


def test_embed_layernorm_is_a_source_blocked_like_layernorm() -> None:
    dg = analyse(embed())
    grp = group_of(dg, "emb")
    assert grp.size == 12 and not grp.prunable
    assert LN_REASON in reasons(dg, "emb")


@pytest.mark.parametrize("segments", [True, False])
def test_embed_layernorm_under_approximate_layernorm_slices_its_tables(segments: bool) -> None:
    model = embed(segments=segments)
    dg = analyse(model, approximate=["layernorm"])
    assert group_of(dg, "emb").prunable and group_of(dg, "emb").approximate
    r = prune(model, dg=dg, plan=plan_removing(dg, {"emb": [0, 11]}), verify=True)
    keep = list(range(1, 11))
    for i, name in ((2, "word"), (3, "position"), (4, "segment"), (5, "gamma"), (6, "beta")):
        if name != "segment" or segments:
            np.testing.assert_array_equal(node_const(r.model, "emb", i), init(model, name)[..., keep])
    np.testing.assert_array_equal(node_const(r.model, "side", 1), init(model, "side.w")[keep])
    assert np.isfinite(outputs_of(r.model, random_inputs(model))["head"]).all()
