"""`--approximate rotate` on pre-LN LayerNorm models (passes/centre.py): every writer of the stream is
centred, each LayerNorm becomes an RMSNorm and its shift goes into its readers' biases; that model
equals the dense one, and is then rotated and sliced as an RMSNorm stream. Post-LN streams are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke
from graphs import Graph, group_of, init, outputs_of
from test_hidden_width import FFN, HIDDEN, MS, SEQ, VOCAB, pre_norm_lm, token_feeds

from onnxprune.api import analyse, prune
from onnxprune.passes.rotate import rotate_hidden
from onnxprune.pipeline.analyse import centre_for_rotation

MODELS = Path(__file__).resolve().parent.parent / "models"
D, PATCH, IMAGE, CLASSES = 12, 4, 8, 5
TOKENS = (IMAGE // PATCH) ** 2 + 1  # the patches and the CLS token


def _centred(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    dg = analyse(model, approximate=["rotate"])
    centred, notes = centre_for_rotation(dg, approximate=["rotate"], grouped="auto")
    return centred.model, notes


def _max_rel_error(a: onnx.ModelProto, b: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> float:
    worst = 0.0
    for feed in feeds:
        want, got = outputs_of(a, feed), outputs_of(b, feed)
        worst = max([worst] + [float(np.linalg.norm(got[k] - want[k]) / np.linalg.norm(want[k])) for k in want])
    return worst


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("opset", [17, 18, 23])
def test_a_layernorm_stream_becomes_a_centred_rmsnorm_stream_that_computes_the_same(opset: int) -> None:
    model = pre_norm_lm("layernorm")
    model.opset_import[0].version = opset  # ReduceMean's axes: an attribute at 17, an input at 18; RMSNormalization at 23
    before = model.SerializeToString()
    centred, notes = _centred(model)
    assert model.SerializeToString() == before  # the input model is not modified
    assert "LayerNormalization" not in _ops(centred)
    assert ("RMSNormalization" in _ops(centred)) == (opset >= 23)
    assert not [t.name for t in centred.graph.initializer if t.name.endswith(".beta")]  # now in the readers' biases
    assert any("3 LayerNorms made RMSNorms" in n and "folded into 3 readers" in n for n in notes), notes
    assert _max_rel_error(model, centred, token_feeds()) < 1e-5
    # The writers are centred: every embedding row sums to zero over the hidden axis.
    np.testing.assert_allclose(init(centred, "emb").sum(axis=1), 0.0, atol=1e-5)
    assert not np.allclose(init(model, "emb").sum(axis=1), 0.0, atol=1e-3)
    hidden = group_of(analyse(centred, approximate=["rotate"]), "embed")
    assert hidden.prunable and hidden.kind == "hidden" and "RMSNorm" in hidden.approximate[0]


def _without_centring(model: onnx.ModelProto, centred: onnx.ModelProto) -> onnx.ModelProto:
    """The rewritten graph with the dense writers put back: what the RMSNorms compute on an uncentred stream."""
    out = onnx.ModelProto()
    out.CopyFrom(centred)
    dense = {t.name: t for t in model.graph.initializer}
    for t in out.graph.initializer:
        if t.name in ("emb", "down0.w", "down1.w"):
            t.CopyFrom(dense[t.name])
    return out


def test_the_centring_is_what_makes_the_rmsnorms_equal_the_layernorms() -> None:
    model = pre_norm_lm("layernorm")
    centred, _ = _centred(model)
    assert _max_rel_error(model, _without_centring(model, centred), token_feeds()) > 1e-2


def vit_like() -> onnx.ModelProto:
    """A ViT as exporters write it: patch Conv [N, D, 2, 2] -> Reshape -> Transpose to [N, T, D], Concat of
    the CLS token (Expanded to the batch) and the patches, Add of position embeddings, two pre-LN blocks
    with biased linear layers, a final LayerNorm, the CLS token gathered and a Gemm (transB=1) classifier."""
    g = Graph(opset=17)
    x = g.input("pixels", ("N", 3, IMAGE, IMAGE))
    conv = g.node("Conv", [x, g.rand("patch.w", (D, 3, PATCH, PATCH), scale=0.3), g.rand("patch.b", (D,), scale=0.5)],
                  name="patch", kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH])
    flat = g.node("Reshape", [conv, g.ints("flat_shape", [0, D, -1])], name="flat")
    patches = g.node("Transpose", [flat], name="tokens", perm=[0, 2, 1])
    batch = g.node("Slice", [g.node("Shape", [x], name="pixels_shape"), g.ints("zero", [0]), g.ints("one", [1])],
                   name="batch")
    shape = g.node("Concat", [batch, g.ints("cls_dims", [1, 1])], name="cls_shape", axis=0)
    cls = g.node("Expand", [g.rand("cls", (1, 1, D), scale=1.0), shape], name="cls_batch")  # at run time
    joined = g.node("Concat", [cls, patches], name="joined", axis=1)
    stream = g.node("Add", [joined, g.rand("pos", (1, TOKENS, D), scale=1.0)], name="embed")
    for layer in range(2):
        for part, width in (("attn", D), ("mlp", 2 * D)):
            name = f"{part}{layer}"
            n = g.node("LayerNormalization", [stream, g.rand(f"{name}.gamma", (D,), low=0.5, scale=1.0),
                                              g.rand(f"{name}.beta", (D,), scale=0.5)], name=f"{name}_norm",
                       axis=-1, epsilon=1e-5)
            inner = g.relu(g.matmul(n, D, width, bias=True, name=f"{name}_in"))
            stream = g.node("Add", [stream, g.matmul(inner, width, D, bias=True, name=f"{name}_out")],
                            name=f"{name}_res")
    final = g.node("LayerNormalization", [stream, g.rand("final.gamma", (D,), low=0.5, scale=1.0),
                                          g.rand("final.beta", (D,), scale=0.5)], name="final_norm", axis=-1)
    first = g.node("Gather", [final, g.const("cls_index", np.array(0, np.int64))], name="first", axis=1)
    g.output(g.gemm(first, D, CLASSES, name="classifier"))
    return g.build()


def image_feeds(n: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{"pixels": rng.standard_normal((1, 3, IMAGE, IMAGE)).astype(np.float32)} for _ in range(n)]


def test_a_vit_stream_is_centred_piece_by_piece_and_computes_the_same() -> None:
    model = vit_like()
    centred, notes = _centred(model)
    assert any("5 LayerNorms made RMSNorms" in n for n in notes), notes
    assert _max_rel_error(model, centred, image_feeds()) < 1e-5
    for name, axis in (("patch.w", 0), ("patch.b", 0), ("cls", 2), ("pos", 2), ("attn0_out.w", 1),
                       ("attn0_out.b", 0), ("mlp1_out.w", 1)):
        np.testing.assert_allclose(init(centred, name).mean(axis=axis), 0.0, atol=1e-6, err_msg=name)
    # The final norm's shift went into the classifier's bias (through the Gather of the CLS token).
    assert not np.allclose(init(centred, "classifier.b"), init(model, "classifier.b"))


def test_a_vit_is_rotated_and_sliced_with_the_hidden_group_reported_approximate() -> None:
    model = vit_like()
    r = prune(model, approximate=["rotate"], calibration=image_feeds(), ratio=0.25, round_to=1,
              keep=["*_in"], verify=True, reconstruct=False)
    assert any("rotated by the PCA" in n for n in r.notes), r.notes
    assert init(r.model, "pos").shape == (1, TOKENS, D - 3) and init(r.model, "patch.w").shape[0] == D - 3
    assert r.verify is not None and r.verify.ok and r.verify.unproven == 3
    assert r.fidelity is not None and 0.9 < r.fidelity.min_cosine < 1.0
    hidden = next(d for d in r.to_json()["groups"] if d["kind"] == "hidden")
    assert hidden["verify"] == "not covered (approximate)"


def test_rotation_keeps_the_layernorm_model_closer_to_dense_than_slicing_channels() -> None:
    common = {"calibration": image_feeds(), "ratio": 0.25, "round_to": 1, "keep": ["*_in"], "reconstruct": False}
    rotated = prune(vit_like(), approximate=["rotate"], **common)
    naive = prune(vit_like(), approximate=["layernorm"], **common)
    assert rotated.removed_slots == naive.removed_slots == 3
    assert rotated.fidelity is not None and naive.fidelity is not None
    assert rotated.fidelity.min_cosine > naive.fidelity.min_cosine


def post_ln_lm() -> onnx.ModelProto:
    """BERT's order: x = LayerNorm(x + FFN(x)): the norm's output is the next block's residual input."""
    g = Graph(opset=17)
    ids = g.input("ids", (1, SEQ), onnx.TensorProto.INT64)
    x = g.node("Gather", [g.rand("emb", (VOCAB, HIDDEN), scale=1.0), ids], name="embed")
    for layer in range(2):
        h = g.matmul(g.relu(g.matmul(x, HIDDEN, 16, bias=True, name=f"up{layer}")), 16, HIDDEN, name=f"down{layer}")
        x = g.node("LayerNormalization", [g.node("Add", [x, h], name=f"res{layer}"),
                                          g.rand(f"norm{layer}.gamma", (HIDDEN,), low=0.5, scale=1.0),
                                          g.rand(f"norm{layer}.beta", (HIDDEN,), scale=0.1)], name=f"norm{layer}", axis=-1)
    g.output(g.matmul(x, HIDDEN, VOCAB, name="head"))
    return g.build()


def test_a_post_ln_stream_is_refused_with_its_reason_in_the_report_and_inspect(tmp_path: Path) -> None:
    model = post_ln_lm()
    centred, notes = _centred(model)
    assert "LayerNormalization" in _ops(centred)
    r = prune(model, approximate=["rotate"], calibration=token_feeds(), ratio=0.25, round_to=1)
    reason = "LayerNorm 'norm0' sits on the residual stream (post-LN"
    assert any(reason in n for n in r.notes), r.notes
    assert not any("rotated by the PCA" in n for n in r.notes)
    assert init(r.model, "emb").shape[1] == HIDDEN  # the hidden width stays blocked
    src = tmp_path / "post_ln.onnx"
    onnx.save(model, src)
    code, out, _ = invoke("inspect", str(src), "--approximate", "rotate")
    assert code == 0 and reason in " ".join(out.split())


def test_a_layernorm_stream_read_outside_its_norms_is_left_as_it_was() -> None:
    """A head reading the stream itself (no final norm) would read the centred stream: refused."""
    model = pre_norm_lm("layernorm")
    head = next(n for n in model.graph.node if n.name == "head")
    head.input[0] = "res1"
    centred, notes = _centred(model)
    assert centred.SerializeToString() == analyse(model).model.SerializeToString()
    assert any("MatMul 'head' reads the hidden channels" in n for n in notes), notes


def test_a_token_table_tied_to_the_head_is_not_centred() -> None:
    """The table writes the stream (centred) and the head reads it (must not be): refused, model unchanged."""
    model = pre_norm_lm("layernorm")
    head = next(n for n in model.graph.node if n.name == "head")
    flat = onnx.helper.make_node("Reshape", [head.input[0], "flat_shape"], ["flat"], name="flat")
    tied = onnx.helper.make_node("Gemm", ["flat", "emb"], [head.output[0]], name="head", transB=1)
    nodes = [n for n in model.graph.node if n.name != "head"] + [flat, tied]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([SEQ, HIDDEN], np.int64), "flat_shape"))
    centred, notes = _centred(model)
    assert "LayerNormalization" in _ops(centred)
    assert any("constant emb both writes and reads the stream (tied)" in n for n in notes), notes


def skip_layernorm_lm() -> onnx.ModelProto:
    """A pre-LN LM as ONNX Runtime's optimizer fuses it: a LayerNormalization first, then
    SkipLayerNormalization adds each layer's output and a bias to the stream, returns the sum (output 3)
    and normalises it."""
    g = Graph(opset=17)
    ids = g.input("ids", (1, SEQ), onnx.TensorProto.INT64)
    stream = g.node("Gather", [g.rand("emb", (VOCAB, HIDDEN), scale=1.0), ids], name="embed")
    n = g.node("LayerNormalization", [stream, g.rand("norm0.gamma", (HIDDEN,), low=0.5, scale=1.0),
                                      g.rand("norm0.beta", (HIDDEN,), scale=0.5)], name="norm0", axis=-1)
    for layer in range(2):
        h = g.matmul(g.relu(g.matmul(n, HIDDEN, FFN, bias=True, name=f"up{layer}")), FFN, HIDDEN, name=f"down{layer}")
        outs = g.node_multi("SkipLayerNormalization",
                            [h, stream, g.rand(f"skip{layer}.gamma", (HIDDEN,), low=0.5, scale=1.0),
                             g.rand(f"skip{layer}.beta", (HIDDEN,), scale=0.5), g.rand(f"skip{layer}.bias", (HIDDEN,))],
                            name=f"skip{layer}", domain=MS, n_out=4 if layer == 0 else 1, epsilon=1e-5)
        n, stream = outs[0], outs[-1]
    g.output(g.matmul(n, HIDDEN, VOCAB, name="head"))
    return g.build()


def test_onnx_runtime_skip_layernorms_become_skip_rmsnorms_and_are_rotated() -> None:
    model = skip_layernorm_lm()
    centred, notes = _centred(model)
    assert "SkipLayerNormalization" not in _ops(centred) and "SkipSimplifiedLayerNormalization" in _ops(centred)
    assert _max_rel_error(model, centred, token_feeds()) < 1e-5
    np.testing.assert_allclose(init(centred, "skip0.bias").sum(), 0.0, atol=1e-5)  # a bias on the stream: centred
    r = prune(model, approximate=["rotate"], calibration=token_feeds(), ratio=0.25, round_to=1, keep=["up*"],
              verify=True, reconstruct=False)
    assert any("rotated by the PCA of 2 residual-stream tensors" in n for n in r.notes), r.notes  # embed, skip0's sum
    assert r.verify is not None and r.verify.ok and r.verify.unproven == 3 and r.fidelity is not None


def test_vit_digits_centred_computes_its_logits_on_the_calibration_images() -> None:
    """The trained ViT: 9 LayerNorms, the patch Conv, CLS token, position embeddings and 8 branch writers."""
    model = onnx.load(str(MODELS / "transformers" / "vit_digits.onnx"))
    centred, notes = _centred(model)
    assert any("9 LayerNorms made RMSNorms" in n for n in notes), notes
    images = np.load(MODELS / "digits" / "calib.npz")["input"].astype(np.float32)
    assert _max_rel_error(model, centred, [{"pixel_values": images[i:i + 64]} for i in range(0, 256, 64)]) < 1e-5


def test_a_scale_shared_by_two_layernorms_is_folded_into_the_readers_of_both() -> None:
    model = pre_norm_lm("layernorm")
    next(n for n in model.graph.node if n.name == "norm1").input[1] = "norm0.gamma"
    dg = analyse(model, approximate=["rotate"])
    centred, _ = centre_for_rotation(dg, approximate=["rotate"], grouped="auto")
    rotation = rotate_hidden(centred, calibration=token_feeds())
    assert rotation.scores
    assert _max_rel_error(model, rotation.model, token_feeds(3)) < 1e-5


@pytest.mark.parametrize("shared_c", [False, True])
def test_a_gemm_readers_alpha_beta_and_shared_bias_take_the_shift_exactly(shared_c: bool) -> None:
    """β·W reaches a Gemm as alpha·β·W: folded into C (over beta), or a new Add when C is shared."""
    model = vit_like()
    gemm = next(n for n in model.graph.node if n.name == "classifier")
    gemm.attribute.extend([onnx.helper.make_attribute("alpha", 0.5), onnx.helper.make_attribute("beta", 2.0)])
    if shared_c:  # another node reads C too: it must not change
        model.graph.node.append(onnx.helper.make_node("Identity", ["classifier.b"], ["c_copy"], name="c_copy"))
        model.graph.output.append(onnx.helper.make_tensor_value_info("c_copy", onnx.TensorProto.FLOAT, None))
    centred, _ = _centred(model)
    assert _max_rel_error(model, centred, image_feeds()) < 1e-5
    assert np.allclose(init(centred, "classifier.b"), init(model, "classifier.b")) == shared_c
