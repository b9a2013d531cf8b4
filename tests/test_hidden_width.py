"""Hidden width (the residual stream) of a pre-norm transformer: the embedding table's columns, every
residual writer's output channels, every norm and every reader's input channels form one group of
kind "hidden". Removing them through a norm is not exact: blocked by default, pruned as approximate
under `--approximate layernorm` / `rmsnorm`, left out of the oracle's proof (which says so) and
measured against the dense model instead. Tiny two-layer models, plus the trained Llama end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from graphs import Graph, group_of, init, outputs_of, plan_removing, reasons, set_init

from onnxprune.api import analyse, prune
from onnxprune.errors import OnnxPruneError
from onnxprune.measure.validate import validate
from onnxprune.passes.rotate import rotate_hidden

VOCAB, HIDDEN, FFN, SEQ = 20, 12, 16, 5
REMOVED = [1, 7, 10]
MODELS = Path(__file__).resolve().parent.parent / "models" / "transformers"
MS = "com.microsoft"


def _rms_chain(g: Graph, x: str, gamma: str, name: str) -> str:
    """LlamaRMSNorm as torch exports it: x · 1/sqrt(mean(x^2) + eps) · gamma."""
    sq = g.node("Pow", [x, g.const(f"{name}.two", np.array(2.0, np.float32))], name=f"{name}_pow")
    mean = g.node("ReduceMean", [sq], name=f"{name}_mean", axes=[-1], keepdims=1)
    var = g.node("Add", [mean, g.const(f"{name}.eps", np.array(1e-6, np.float32))], name=f"{name}_eps")
    root = g.node("Sqrt", [var], name=f"{name}_sqrt")
    inv = g.node("Reciprocal", [root], name=f"{name}_inv")
    n = g.node("Mul", [x, inv], name=f"{name}_n")
    return g.node("Mul", [n, gamma], name=name)


# RMSNorm as one op: ONNX's (opset 23), and ONNX Runtime's in the default domain (GenAI exports).
FUSED = {"rmsnorm_op": "RMSNormalization", "simplified": "SimplifiedLayerNormalization"}


def _norm(g: Graph, x: str, kind: str, name: str) -> str:
    gamma = g.rand(f"{name}.gamma", (HIDDEN,), low=0.5, scale=1.0)
    if kind == "layernorm":
        return g.node("LayerNormalization", [x, gamma, g.rand(f"{name}.beta", (HIDDEN,), scale=0.1)], name=name,
                      axis=-1, epsilon=1e-5)
    if kind in FUSED:
        return g.node(FUSED[kind], [x, gamma], name=name, axis=-1, epsilon=1e-6)
    return _rms_chain(g, x, gamma, name)


def pre_norm_lm(kind: str, *, stream_relu: bool = False) -> onnx.ModelProto:
    """ids -> embedding -> 2 × (x + FFN(norm(x))) -> norm -> head: the residual stream is HIDDEN wide.
    `stream_relu`: a Relu on the stream itself after the first layer (no longer rotation-invariant)."""
    g = Graph(opset=23 if kind == "rmsnorm_op" else 17)
    ids = g.input("ids", (1, SEQ), onnx.TensorProto.INT64)
    x = g.node("Gather", [g.rand("emb", (VOCAB, HIDDEN), scale=1.0), ids], name="embed")
    for layer in range(2):
        n = _norm(g, x, kind, f"norm{layer}")
        up = g.relu(g.matmul(n, HIDDEN, FFN, name=f"up{layer}"))
        x = g.node("Add", [x, g.matmul(up, FFN, HIDDEN, name=f"down{layer}")], name=f"res{layer}")
        if stream_relu and layer == 0:
            x = g.relu(x, name="stream_relu")
    g.output(g.matmul(_norm(g, x, kind, "final_norm"), HIDDEN, VOCAB, name="head"))
    return g.build()


KINDS = {"layernorm": "layernorm", "rmsnorm": "rmsnorm", "rmsnorm_op": "rmsnorm", "simplified": "rmsnorm"}


@pytest.mark.parametrize("model_kind", list(KINDS))
def test_hidden_width_is_blocked_by_default_with_the_opt_in_named(model_kind: str) -> None:
    model = pre_norm_lm(model_kind)
    dg = analyse(model)
    hidden = group_of(dg, "embed")
    assert hidden.kind == "hidden" and not hidden.prunable
    assert set(hidden.sources) == {"embed", "down0", "down1"}
    assert f"--approximate {KINDS[model_kind]}" in reasons(dg, "embed")
    assert group_of(dg, "up0").prunable and group_of(dg, "up0").kind == "channel"
    other = "rmsnorm" if KINDS[model_kind] == "layernorm" else "layernorm"
    assert not group_of(analyse(model, approximate=[other]), "embed").prunable


@pytest.mark.parametrize("model_kind", list(KINDS))
def test_hidden_width_under_approximate_slices_embedding_writers_norms_readers_and_head(model_kind: str) -> None:
    model = pre_norm_lm(model_kind)
    dg = analyse(model, approximate=[KINDS[model_kind]])
    hidden = group_of(dg, "embed")
    assert hidden.prunable and hidden.kind == "hidden" and hidden.approximate
    r = prune(model, dg=dg, plan=plan_removing(dg, {"embed": REMOVED}), verify=True, calibration=None)
    keep = [i for i in range(HIDDEN) if i not in REMOVED]
    np.testing.assert_array_equal(init(r.model, "emb"), init(model, "emb")[:, keep])
    np.testing.assert_array_equal(init(r.model, "down1.w"), init(model, "down1.w")[:, keep])
    np.testing.assert_array_equal(init(r.model, "up0.w"), init(model, "up0.w")[keep])
    np.testing.assert_array_equal(init(r.model, "head.w"), init(model, "head.w")[keep])
    # The oracle proves the exact groups only, and says so; the approximate slots get a fidelity figure.
    assert r.verify is not None and r.verify.ok and r.verify.unproven == len(REMOVED)
    assert "exact groups only" in r.verify.describe()
    assert r.fidelity is not None and 0.0 < r.fidelity.min_cosine < 1.0
    assert r.fidelity.outputs[0].rel_l2_error > 0.0
    decisions = {d["id"]: d for d in r.to_json()["groups"]}
    assert decisions[hidden.id]["verify"] == "not covered (approximate)" and decisions[hidden.id]["kind"] == "hidden"


def _zeroed(model: onnx.ModelProto, channels: list[int]) -> onnx.ModelProto:
    """The dense model with hidden channels zeroed wherever they are written (the embedding, each layer's
    down projection): what pruning them would compute if the norms were exact."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in ("emb", "down0.w", "down1.w"):
            a = onnx.numpy_helper.to_array(t).copy()
            a[:, channels] = 0
            t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
    return out


@pytest.mark.parametrize("model_kind", list(KINDS))
def test_rmsnorm_keeps_its_denominator_layernorm_cannot(model_kind: str) -> None:
    """An RMSNorm that loses channels is rescaled (epsilon · H/H', gamma · sqrt(H/H')) so that it computes
    what the dense norm computes over the zeroed channels; a LayerNorm's mean moves: only approximate."""
    model = pre_norm_lm(model_kind)
    dg = analyse(model, approximate=[KINDS[model_kind]])
    pruned = prune(model, dg=dg, plan=plan_removing(dg, {"embed": REMOVED})).model
    ids = {"ids": np.array([[0, 3, 7, 19, 4]], dtype=np.int64)}
    want = analyse(_zeroed(model, REMOVED)).model
    got, ref = outputs_of(pruned, ids), outputs_of(want, ids)
    (name,) = ref
    if KINDS[model_kind] == "rmsnorm":
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-5)
    else:
        assert not np.allclose(got[name], ref[name], rtol=1e-3, atol=1e-4)


def test_cli_names_the_kinds_marks_approximate_and_reports_fidelity(tmp_path: Path) -> None:
    src = tmp_path / "lm.onnx"
    onnx.save(pre_norm_lm("rmsnorm"), src)
    code, out, err = invoke("prune", "--help")
    assert "[layernorm|rmsnorm|rotate]" in out
    code, out, err = invoke("prune", str(src), "-o", str(tmp_path / "x.onnx"), "--approximate", "softmax")
    assert code == 2 and all(k in err for k in ("layernorm", "rmsnorm", "rotate"))
    code, out, err = invoke("prune", str(src), "-o", str(tmp_path / "x.onnx"), "--approximate", "rotate")
    assert code == 2 and "rotate needs --calib" in one_line_error(err) and not (tmp_path / "x.onnx").exists()
    code, out, err = invoke("inspect", str(src), "--approximate", "rmsnorm", "--json")
    assert code == 0, err
    (hidden,) = [g for g in json.loads(out)["groups"] if g["kind"] == "hidden"]
    assert hidden["prunable"] and hidden["approximate"]
    report = tmp_path / "r.json"
    code, out, err = invoke("prune", str(src), "-o", str(tmp_path / "p.onnx"), "--approximate", "rmsnorm",
                            "--ratio", "0.3", "--round-to", "1", "--verify", "--report", str(report))
    assert code == 0, err
    assert "verify PASS (exact groups only" in out and "fidelity (approximate groups, not proven)" in out
    data = json.loads(report.read_text())
    assert data["verify"]["approximate_slots_unproven"] > 0 and data["fidelity"]["min_cosine"] < 1.0


def test_trained_llama_loses_hidden_width_under_approximate_rmsnorm() -> None:
    """End to end on the byte-level Llama trained here: the residual stream (embedding, 8 residual Adds,
    9 RMSNorms, the head) is one hidden group; pruned a quarter, it stays close to the dense model."""
    from onnxprune.calib.source import CalibConfig

    calib = CalibConfig(path=str(MODELS / "lm_calib.npz"), samples=8)
    dg = analyse(str(MODELS / "lm_llama.onnx"), approximate=["rmsnorm"], calibration=calib)
    (hidden,) = [g for g in dg.groups if g.kind == "hidden"]
    assert hidden.prunable and hidden.size == 96 and len(hidden.sources) == 9  # embedding + 4 × (o, down)
    plan = plan_removing(dg, {hidden.sources[0]: list(range(0, 96, 4))})
    r = prune(dg.model, dg=dg, plan=plan, verify=True, calibration=calib, reconstruct=False)
    assert r.verify is not None and r.verify.ok and r.verify.unproven == 24
    assert r.fidelity is not None and r.fidelity.source == "calibration" and r.fidelity.min_cosine > 0.5
    before, after = r.stats
    assert after.params < 0.85 * before.params


def test_trained_llama_keeps_closer_to_dense_when_the_stream_is_rotated_first() -> None:
    from onnxprune.calib.source import CalibConfig

    common = {"calibration": CalibConfig(path=str(MODELS / "lm_calib.npz"), samples=8), "ratio": 0.25,
              "round_to": 1, "reconstruct": False,
              "keep": ["*q_proj*", "*k_proj*", "*v_proj*", "*gate_proj*", "*up_proj*"]}  # hidden width only
    rotated = prune(str(MODELS / "lm_llama.onnx"), approximate=["rotate"], **common)
    naive = prune(str(MODELS / "lm_llama.onnx"), approximate=["rmsnorm"], **common)
    assert rotated.removed_slots == naive.removed_slots == 24
    assert rotated.fidelity is not None and naive.fidelity is not None
    assert rotated.fidelity.min_cosine > 0.99 > naive.fidelity.min_cosine


def test_bert_hidden_width_reaches_its_output_and_stays() -> None:
    """BERT (TorchScript export) returns last_hidden_state: its hidden width cannot shrink, whatever the
    norms allow, and the analysis says which output holds it."""
    dg = analyse(str(MODELS / "bert_ts.onnx"), approximate=["layernorm"])
    (hidden,) = [g for g in dg.groups if g.kind == "hidden"]
    assert not hidden.prunable and hidden.approximate
    assert any("last_hidden_state" in b for b in hidden.blocked)
    assert any(g.prunable and g.kind == "head" for g in dg.groups)


RANK = 8


def skip_norm_lm() -> onnx.ModelProto:
    """pre_norm_lm as ONNX Runtime's transformer optimizer fuses it: the first norm a
    SimplifiedLayerNormalization, then SkipSimplifiedLayerNormalization adds each layer's output to
    the stream (with a bias), returns the sum (output 3) and normalises it."""
    g = Graph(opset=17)
    ids = g.input("ids", (1, SEQ), onnx.TensorProto.INT64)
    stream = g.node("Gather", [g.rand("emb", (VOCAB, HIDDEN), scale=1.0), ids], name="embed")
    n = _norm(g, stream, "simplified", "norm0")
    for layer in range(2):
        h = g.matmul(g.relu(g.matmul(n, HIDDEN, FFN, name=f"up{layer}")), FFN, HIDDEN, name=f"down{layer}")
        gamma = g.rand(f"skip{layer}.gamma", (HIDDEN,), low=0.5, scale=1.0)
        outs = g.node_multi("SkipSimplifiedLayerNormalization",
                            [h, stream, gamma, g.rand(f"skip{layer}.bias", (HIDDEN,), scale=0.1)],
                            name=f"skip{layer}", domain=MS, n_out=4 if layer == 0 else 1, epsilon=1e-6)
        n = outs[0]
        stream = outs[-1]
    g.output(g.matmul(n, HIDDEN, VOCAB, name="head"))
    return g.build()


def test_rotation_goes_through_onnx_runtime_skip_norms() -> None:
    model = skip_norm_lm()
    dg = analyse(model, approximate=["rotate"])
    assert group_of(dg, "embed").prunable and group_of(dg, "embed").kind == "hidden"
    rotation = rotate_hidden(dg, calibration=token_feeds())
    assert rotation.scores and "2 residual-stream tensors" in rotation.notes[0]  # the embedding and skip0's sum
    assert not np.allclose(init(rotation.model, "emb"), init(dg.model, "emb"))
    for feed in token_feeds(3):
        (want,), (got,) = outputs_of(dg.model, feed).values(), outputs_of(rotation.model, feed).values()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    r = prune(model, approximate=["rotate"], calibration=token_feeds(), ratio=0.25, round_to=1, keep=["up*"],
              verify=True, reconstruct=False)
    assert r.verify is not None and r.verify.ok and r.verify.unproven == 3 and r.fidelity is not None


def low_rank_lm(kind: str) -> onnx.ModelProto:
    """pre_norm_lm whose residual stream lies in a random RANK-dimensional subspace of the HIDDEN channels
    (the embedding and both down projections write into it): no single channel is unimportant, but
    HIDDEN - RANK directions carry nothing."""
    model = pre_norm_lm(kind)
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((HIDDEN, HIDDEN)))[0][:RANK]  # RANK orthonormal rows
    for name in ("emb", "down0.w", "down1.w"):
        set_init(model, name, lambda w: (w[:, :RANK] @ basis).astype(np.float32))
    return model


def token_feeds(n: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [{"ids": rng.integers(0, VOCAB, (1, SEQ)).astype(np.int64)} for _ in range(n)]


@pytest.mark.parametrize("model_kind", ["rmsnorm", "rmsnorm_op", "simplified"])
def test_rotation_keeps_the_model_and_orders_directions_by_variance(model_kind: str) -> None:
    model = low_rank_lm(model_kind)
    dg = analyse(model, approximate=["rotate"])
    rotation = rotate_hidden(dg, calibration=token_feeds())
    (variance,) = rotation.scores.values()
    assert np.all(np.diff(variance) <= 0) and variance[RANK:].sum() < 1e-9 * variance.sum()
    for feed in token_feeds(3):
        (want,), (got,) = outputs_of(dg.model, feed).values(), outputs_of(rotation.model, feed).values()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(init(rotation.model, "emb"), init(dg.model, "emb"))


@pytest.mark.parametrize("model_kind", ["rmsnorm", "rmsnorm_op", "simplified"])
def test_rotate_slices_the_empty_directions_where_rmsnorm_must_drop_channels(model_kind: str) -> None:
    model = low_rank_lm(model_kind)
    common = {"calibration": token_feeds(), "ratio": (HIDDEN - RANK) / HIDDEN, "round_to": 1, "keep": ["up*"],
              "verify": True, "reconstruct": False}
    rotated = prune(model, approximate=["rotate"], **common)
    naive = prune(model, approximate=["rmsnorm"], **common)
    for r in (rotated, naive):
        assert r.removed_slots == HIDDEN - RANK and r.verify is not None and r.verify.ok and r.fidelity is not None
        assert init(r.model, "emb").shape == (VOCAB, RANK)
    assert rotated.fidelity is not None and naive.fidelity is not None
    assert rotated.fidelity.min_cosine > 0.9999 > 0.99 > naive.fidelity.min_cosine
    assert any("rotated by the PCA" in n for n in rotated.notes)


def test_rotate_leaves_a_stream_it_cannot_rotate_and_says_why() -> None:
    r = prune(pre_norm_lm("rmsnorm", stream_relu=True), approximate=["rotate"], calibration=token_feeds(),
              ratio=0.25, round_to=1, keep=["up*"])
    assert any("not rotated" in n and "Relu 'stream_relu'" in n for n in r.notes)
    assert r.removed_slots > 0


def test_fidelity_of_a_run_in_steps_is_measured_against_the_original() -> None:
    model = low_rank_lm("rmsnorm")
    r = prune(model, approximate=["rotate"], calibration=token_feeds(), ratio=0.5, round_to=1, steps=2)
    assert r.fidelity is not None
    direct = validate(analyse(model).model, r.model, feeds=token_feeds()[:r.fidelity.num_batches])
    assert r.fidelity.min_cosine == pytest.approx(direct.min_cosine, abs=1e-9)


def _sharing(model: onnx.ModelProto, node: str, weight: str) -> onnx.ModelProto:
    """The model with `node` reading `weight` instead of its own (tied weights)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    next(n for n in out.graph.node if n.name == node).input[1] = weight
    return out


def test_rotation_carries_tied_writers_once_and_refuses_to_fold_a_scale_into_a_tied_reader() -> None:
    tied_writers = _sharing(low_rank_lm("rmsnorm"), "down1", "down0.w")
    dg = analyse(tied_writers, approximate=["rotate"])
    rotation = rotate_hidden(dg, calibration=token_feeds())
    assert rotation.scores
    feed = token_feeds(1)[0]
    (want,), (got,) = outputs_of(dg.model, feed).values(), outputs_of(rotation.model, feed).values()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # up0 and up1 reading one weight: norm0's and norm1's scales cannot both be folded into it.
    tied_readers = _sharing(low_rank_lm("rmsnorm"), "up1", "up0.w")
    rotation = rotate_hidden(analyse(tied_readers, approximate=["rotate"]), calibration=token_feeds())
    assert not rotation.scores and "read by more than MatMuls with constant weights" in rotation.notes[0]


def test_rotate_needs_calibration_data() -> None:
    with pytest.raises(OnnxPruneError, match="rotate needs --calib"):
        prune(pre_norm_lm("rmsnorm"), approximate=["rotate"], ratio=0.25)


def test_t5_relative_position_bias_tables_are_cut_with_the_heads_not_read_as_embeddings() -> None:
    """T5's relative position bias is a Gather of a [buckets, heads] table by run-time ids, like an
    embedding; its columns meet the attention heads, so it stays a constant each layer's heads cut
    (graph/analysis.py), and only the token embeddings are sources."""
    from onnxprune.planning.plan import Plan

    dg = analyse(str(MODELS.parent / "zoo" / "t5_dynamo.onnx"))
    assert dg.analysis.bias_tables == {"node_embedding_1", "node_embedding_3"}
    assert sorted(dg.analysis.tables) == ["node_embedding", "node_embedding_2"]
    heads = [g for g in dg.prunable if g.kind == "head"]
    assert len(heads) == 6
    r = prune(dg.model, dg=dg, plan=Plan({g.id: [1] for g in heads}), verify=True)
    assert r.verify is not None and r.verify.ok and r.verify.masked_edges > 0


def test_sensitivity_measures_the_stream_the_prune_run_rotates(tmp_path: Path) -> None:
    src, npz = tmp_path / "m.onnx", tmp_path / "t.npz"
    onnx.save(low_rank_lm("rmsnorm"), src)
    np.savez(npz, ids=np.concatenate([f["ids"] for f in token_feeds()]))
    ratio = (HIDDEN - RANK) / HIDDEN
    errors = {}
    for kind in ("rotate", "rmsnorm"):
        out = tmp_path / f"{kind}.json"
        code, text, err = invoke("sensitivity", str(src), "--calib", str(npz), "--approximate", kind, "--ratios",
                                 f"{ratio:.4f}", "--round-to", "1", "--keep", "up*", "--json", str(out), "--no-progress")
        assert code == 0, err
        (hidden,) = [g for g in json.loads(out.read_text())["groups"] if "emb" in " ".join(g["sources"])]
        errors[kind] = hidden["points"][0]["channel_error"]
        assert ("rotated by the PCA" in text) == (kind == "rotate")
    assert errors["rotate"] < 1e-4 < 1e-2 < errors["rmsnorm"]  # the empty directions go first once rotated
    common = ("--calib", str(npz), "--approximate", "rotate", "--target-params", "0.8", "--round-to", "1",
              "--keep", "up*", "--no-progress")
    code, _, err = invoke("prune", str(src), "-o", str(tmp_path / "ok.onnx"), "--sensitivity",
                          str(tmp_path / "rotate.json"), *common)
    assert code == 0, err
    code, _, err = invoke("prune", str(src), "-o", str(tmp_path / "no.onnx"), "--sensitivity",
                          str(tmp_path / "rmsnorm.json"), *common)
    assert code == 2 and "measured without the hidden width rotated" in one_line_error(err)
    assert not (tmp_path / "no.onnx").exists()
