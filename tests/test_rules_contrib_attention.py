"""ONNX Runtime's fused attention (com.microsoft Attention, MultiHeadAttention, GroupQueryAttention) and
RotaryEmbedding: whole heads are the pruning unit, head counts are rewritten, a KV cache blocks; every
graph runs in ONNX Runtime and every prune is proven by the oracle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import (
    Graph,
    attr,
    checked_prune,
    exercise,
    group_of,
    init,
    node_const,
    plan_removing,
    reasons,
    source_roots,
)
from onnx import TensorProto

from onnxprune.api import analyse
from onnxprune.graph.apply import ApplyContext
from onnxprune.io.input_values import infer_rules
from onnxprune.passes.prune import ApplyPlan
from onnxprune.verify import verify_pruned

MS = "com.microsoft"
HIDDEN, HEADS = 16, 4
INT32 = TensorProto.INT32


def head_columns(heads: list[int], size: int, offset: int = 0) -> list[int]:
    """The columns of `heads` (each `size` wide) in a block starting at `offset`."""
    return [offset + h * size + j for h in heads for j in range(size)]


# -- Attention (packed QKV weight) ------------------------------------------------------------------

def bert_attention(*, qkv_sizes: list[int] | None = None, mask: bool = False, bias: bool = True,
                   present: bool = False, attention_bias: bool = False, **attrs: object) -> onnx.ModelProto:
    """x -> proj -> Attention (4 heads) -> out; the Attention reads proj's channels through its weight rows."""
    g = Graph(opset=17)
    x = g.input("x", (2, 5, HIDDEN))
    sizes = qkv_sizes or [HIDDEN] * 3
    h = g.matmul(x, HIDDEN, HIDDEN, name="proj")
    inputs = [h, g.rand("att.w", (HIDDEN, sum(sizes)), scale=0.3), g.rand("att.b", (sum(sizes),)) if bias else ""]
    if mask or attention_bias:
        inputs.append(g.input("mask", (2, 5), elem=INT32) if mask else "")
    if attention_bias:
        inputs += ["", g.rand("att.rel", (1, HEADS, 5, 5))]
    if qkv_sizes:
        attrs["qkv_hidden_sizes"] = qkv_sizes
    outs = g.node_multi("Attention", inputs, name="att", domain=MS, n_out=2 if present else 1, num_heads=HEADS,
                        **attrs)
    g.output(g.matmul(outs[0], sizes[2], 8, name="out"))
    if present:
        g.output(outs[1])
    return g.build()


def test_attention_prunes_whole_heads_of_its_packed_weight() -> None:
    model = bert_attention()
    dg = analyse(model)
    grp = group_of(dg, "att")
    assert grp.prunable and (grp.size, grp.width) == (HEADS, 4) and grp.kind == "head"
    assert group_of(dg, "proj").prunable and group_of(dg, "proj").kind == "channel"  # its channels are the Attention's weight rows
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"att": [1, 3]}))
    assert attr(r.model, "att", "num_heads") == 2
    cols = head_columns([0, 2], 4) + head_columns([0, 2], 4, 16) + head_columns([0, 2], 4, 32)
    np.testing.assert_array_equal(node_const(r.model, "att", 1), init(model, "att.w")[:, cols])
    np.testing.assert_array_equal(node_const(r.model, "att", 2), init(model, "att.b")[cols])
    np.testing.assert_array_equal(node_const(r.model, "out", 1), init(model, "out.w")[head_columns([0, 2], 4)])
    exercise(model)


def test_attention_input_channels_are_its_weight_rows() -> None:
    model = bert_attention()
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"proj": [2, 9]}))
    keep = [i for i in range(HIDDEN) if i not in (2, 9)]
    np.testing.assert_array_equal(node_const(r.model, "att", 1), init(model, "att.w")[keep])
    assert attr(r.model, "att", "num_heads") == HEADS


@pytest.mark.parametrize("case", ["qkv_hidden_sizes", "no bias", "mask", "unidirectional", "attention bias"])
def test_attention_variants(case: str) -> None:
    kwargs: dict[str, object] = {"qkv_hidden_sizes": {"qkv_sizes": [16, 16, 8]}, "no bias": {"bias": False},
                                 "mask": {"mask": True}, "unidirectional": {"unidirectional": 1},
                                 "attention bias": {"attention_bias": True}}[case]
    model = bert_attention(**kwargs)  # type: ignore[arg-type]
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"att": [2]}))
    if case == "qkv_hidden_sizes":  # V heads are 2 wide, Q and K heads 4
        assert attr(r.model, "att", "qkv_hidden_sizes") == [12, 12, 6]
        assert group_of(dg, "att").width == 2
    if case == "mask":
        assert str(infer_rules(model)["mask"]) == "ones"
    if case == "attention bias":  # one [S, S] bias per head: head 2's goes
        np.testing.assert_array_equal(node_const(r.model, "att", 5), init(model, "att.rel")[:, [0, 1, 3]])
    exercise(model)


def test_attention_with_a_kv_cache_output_blocks_its_heads() -> None:
    dg = analyse(bert_attention(present=True))
    assert not group_of(dg, "att").prunable
    assert "KV cache (past/present) holds the heads" in reasons(dg, "att")
    assert group_of(dg, "proj").prunable  # the input channels are still the weight's rows


def test_the_oracle_tells_a_wrong_head_apart() -> None:
    """Keeping the columns of a removed head (an off-by-one head) must fail verification."""
    model = bert_attention()
    dg = analyse(model)
    removed = source_roots(dg, "att", [4])  # head 1
    pruned = ApplyPlan(dg, removed)(dg.model).model
    assert verify_pruned(dg, removed, pruned).ok
    wrong = source_roots(dg, "att", [8])  # head 2
    bad = ApplyPlan(dg, wrong)(dg.model).model
    result = verify_pruned(dg, removed, bad)
    assert not result.ok and result.max_rel_error > 1e-2
    assert ApplyContext(dg.model, dg.analysis.roots, removed).kept_count(group_of(dg, "att").slots) == 3


# -- MultiHeadAttention (separate Q, K, V) -----------------------------------------------------------

def mha(*, kv_length: int = 5, bias: bool = True, v_source: bool = True, padding_mask: bool = False,
        rotary: bool = False) -> onnx.ModelProto:
    g = Graph(opset=17)
    x = g.input("x", (2, 5, HIDDEN))
    mem = g.input("mem", (2, kv_length, HIDDEN)) if kv_length != 5 else x
    q, k = g.matmul(x, HIDDEN, HIDDEN, name="q"), g.matmul(mem, HIDDEN, HIDDEN, name="k")
    v = g.matmul(mem, HIDDEN, HIDDEN, name="v") if v_source else mem
    if rotary:
        pos = g.input("position_ids", (2, 5), elem=TensorProto.INT64)
        cos, sin = g.rand("cos", (16, 2)), g.rand("sin", (16, 2))
        q = g.node("RotaryEmbedding", [q, pos, cos, sin], name="rot_q", domain=MS)
        k = g.node("RotaryEmbedding", [k, pos, cos, sin], name="rot_k", domain=MS)
    inputs = [q, k, v, g.rand("mha.b", (3 * HIDDEN,)) if bias else ""]
    if padding_mask:
        inputs.append(g.input("key_mask", (2, kv_length), elem=INT32))
    a = g.node("MultiHeadAttention", inputs, name="mha", domain=MS, num_heads=HEADS)
    g.output(g.matmul(a, HIDDEN, 8, name="o"))
    return g.build()


def test_mha_couples_a_heads_query_key_and_value() -> None:
    model = mha()
    dg = analyse(model)
    grp = group_of(dg, "q")
    assert sorted(grp.sources) == ["k", "q", "v"] and (grp.size, grp.width) == (HEADS, 4) and grp.kind == "head"
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"q": [0]}))
    assert attr(r.model, "mha", "num_heads") == 3
    kept = head_columns([1, 2, 3], 4)
    for name in ("q", "k", "v"):
        np.testing.assert_array_equal(node_const(r.model, name, 1), init(model, f"{name}.w")[:, kept])
    bias_kept = kept + [16 + c for c in kept] + [32 + c for c in kept]
    np.testing.assert_array_equal(node_const(r.model, "mha", 3), init(model, "mha.b")[bias_kept])
    exercise(model)


@pytest.mark.parametrize("case", ["cross attention", "no bias", "padding mask"])
def test_mha_variants(case: str) -> None:
    model = mha(kv_length=7 if case == "cross attention" else 5, bias=case != "no bias",
                padding_mask=case == "padding mask")
    if case == "padding mask":
        assert str(infer_rules(model)["key_mask"]) == "ones"
    exercise(model)


def test_mha_with_a_value_no_layer_makes_blocks_with_the_reason() -> None:
    dg = analyse(mha(v_source=False))
    assert not group_of(dg, "q").prunable
    assert "a head's query, key and value channels go together" in reasons(dg, "q")


# -- RotaryEmbedding -----------------------------------------------------------------------------------

def test_rotary_embedding_passes_whole_heads() -> None:
    model = mha(rotary=True)
    dg = analyse(model)
    grp = group_of(dg, "q")
    assert grp.prunable and grp.size == HEADS
    assert str(infer_rules(model)["position_ids"]) == "index below 16"  # rows of the cos/sin caches
    checked_prune(model, dg=dg, plan=plan_removing(dg, {"q": [1, 2]}))
    exercise(model)


def test_rotary_embedding_num_heads_follows_the_kept_heads() -> None:
    g = Graph(opset=17)
    x = g.input("x", (1, 5, HIDDEN))
    pos = g.input("position_ids", (1, 5), elem=TensorProto.INT64)
    q = g.node("RotaryEmbedding", [g.matmul(x, HIDDEN, HIDDEN, name="q"), pos, g.rand("cos", (16, 2)),
                                   g.rand("sin", (16, 2))], name="rot", domain=MS, num_heads=HEADS)
    g.output(g.matmul(q, HIDDEN, 8, name="o"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "q").size == HEADS  # rotation pairs stay inside a head: whole heads only
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"q": [3]}))
    assert attr(r.model, "rot", "num_heads") == 3


def test_rotary_embedding_blocks_head_dim_channels() -> None:
    """A Reshape to [B, S, N, D] prunes the same channel of every head (head_dim): rotary pairs forbid it."""
    g = Graph(opset=17)
    x = g.input("x", (1, 5, HIDDEN))
    pos = g.input("position_ids", (1, 5), elem=TensorProto.INT64)
    q = g.node("Reshape", [g.matmul(x, HIDDEN, HIDDEN, name="q"), g.ints("split", [1, 5, HEADS, 4])])
    q = g.node("Transpose", [q], perm=[0, 2, 1, 3])
    q = g.node("RotaryEmbedding", [q, pos, g.rand("cos", (16, 2)), g.rand("sin", (16, 2))], name="rot", domain=MS)
    q = g.node("Reshape", [g.node("Transpose", [q], perm=[0, 2, 1, 3]), g.ints("merge", [1, 5, HIDDEN])])
    g.output(g.matmul(q, HIDDEN, 8, name="o"))
    dg = analyse(g.build())
    assert not group_of(dg, "q").prunable
    assert "head_dim channels (the same channel of every head) reach RotaryEmbedding" in reasons(dg, "q")


# -- GroupQueryAttention ----------------------------------------------------------------------------------

GQA_HEADS, GQA_KV, GQA_D = 4, 2, 16


def gqa(*, packed: bool = True, rotary: bool = False, cache: bool = False) -> onnx.ModelProto:
    """ids -> embedding -> qkv (packed, or q/k/v) -> GroupQueryAttention (4 query heads, 2 KV heads of 16) -> o.
    The lengths GroupQueryAttention checks follow input_ids (onnxprune.io.input_values)."""
    g = Graph(opset=17)
    hidden = GQA_HEADS * GQA_D
    x = g.node("Gather", [g.rand("embedding", (50, 32)), g.input("input_ids", (1, 5), elem=TensorProto.INT64)])
    seqlens = g.input("seqlens_k", (1,), elem=INT32)
    total = g.input("total_sequence_length", (), elem=INT32)
    if packed:
        qkv = [g.matmul(x, 32, (GQA_HEADS + 2 * GQA_KV) * GQA_D, name="qkv"), "", ""]
    else:
        qkv = [g.matmul(x, 32, hidden, name="q"), g.matmul(x, 32, GQA_KV * GQA_D, name="k"),
               g.matmul(x, 32, GQA_KV * GQA_D, name="v")]
    past = [g.input(f"past_key_values.0.{n}", ("batch_size", GQA_KV, "past_sequence_length", GQA_D))
            for n in ("key", "value")] if cache else ["", ""]
    inputs = [*qkv, *past, seqlens, total]
    if rotary:
        inputs += [g.rand("cos", (16, GQA_D // 2)), g.rand("sin", (16, GQA_D // 2))]
    outs = g.node_multi("GroupQueryAttention", inputs, name="gqa", domain=MS, n_out=3 if cache else 1,
                        num_heads=GQA_HEADS, kv_num_heads=GQA_KV, do_rotary=int(rotary))
    g.output(g.matmul(outs[0], hidden, 8, name="o"))
    for out in outs[1:]:
        g.output(out)
    return g.build()


@pytest.mark.parametrize("rotary", [False, True])
def test_gqa_packed_prunes_whole_kv_groups(rotary: bool) -> None:
    model = gqa(rotary=rotary)
    dg = analyse(model)
    grp = group_of(dg, "qkv")
    assert grp.prunable and (grp.size, grp.width) == (GQA_KV, 2 * GQA_D + 2 * GQA_D) and grp.kind == "head"
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"qkv": [1]}))
    assert (attr(r.model, "gqa", "num_heads"), attr(r.model, "gqa", "kv_num_heads")) == (2, 1)
    cols = head_columns([0, 1], GQA_D) + head_columns([0], GQA_D, 64) + head_columns([0], GQA_D, 96)
    np.testing.assert_array_equal(node_const(r.model, "qkv", 1), init(model, "qkv.w")[:, cols])
    np.testing.assert_array_equal(node_const(r.model, "o", 1), init(model, "o.w")[head_columns([0, 1], GQA_D)])
    exercise(model)


def test_gqa_separate_inputs_couple_a_group() -> None:
    model = gqa(packed=False)
    dg = analyse(model)
    grp = group_of(dg, "q")
    assert sorted(grp.sources) == ["k", "q", "v"] and grp.size == GQA_KV
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"q": [0]}))
    np.testing.assert_array_equal(node_const(r.model, "q", 1), init(model, "q.w")[:, head_columns([2, 3], GQA_D)])
    np.testing.assert_array_equal(node_const(r.model, "k", 1), init(model, "k.w")[:, head_columns([1], GQA_D)])
    exercise(model)


def test_gqa_with_a_kv_cache_blocks_its_groups_and_runs_on_an_empty_cache() -> None:
    model = gqa(cache=True)
    dg = analyse(model)  # the shape probe runs the model: past_sequence_length defaults to 0
    assert not group_of(dg, "qkv").prunable
    assert "KV cache (past/present) holds the heads" in reasons(dg, "qkv")
    # Only the embedding's width is left (its columns and the projection's rows): the heads stay.
    r = checked_prune(model, dg=dg, ratio=0.5)
    assert [g.sources for g in dg.prunable] == [["gather1"]]
    assert attr(r.model, "gqa", "kv_num_heads") == GQA_KV and node_const(r.model, "qkv", 1).shape == (16, 128)
