"""Attention heads as pruning units (analyse(heads=...)): whole heads, GQA KV groups, head_dim with
RoPE's rotate-half pairs, repeat_kv, Shape-derived targets, written-out scaled dot-product attention."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from graphs import (
    Graph,
    assert_valid,
    checked_prune,
    exercise,
    group_of,
    init,
    node_const,
    outputs_of,
    reasons,
)

from onnxprune.api import analyse, prune
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.tracks import map_roots
from onnxprune.io.inputs import random_inputs
from onnxprune.measure.curves import SensitivityResult, sensitivity_curves
from onnxprune.planning.plan import Plan

INT_MAX = np.iinfo(np.int64).max


def attention_block(*, heads: int = 4, kv_heads: int | None = None, head_dim: int = 4, seq: int = 5,
                    rope: str | None = None, dynamic: bool = False, kv_count_from_shape: bool = False,
                    position_bias: bool = False, width_from_shape: bool = False, opset: int = 17) -> onnx.ModelProto:
    """x -> q/k/v projections -> heads -> [RoPE] -> [repeat_kv] -> softmax(q·kᵀ·scale)·v -> merge -> o.

    dynamic: batch and sequence are dynamic and every reshape target is built from Shape(x) (the
    head count as -1, which ONNX inference cannot resolve). rope: None, "const" (cos/sin tables as
    constants) or "computed" (cos/sin from the positions at run time; needs dynamic). kv_heads < heads:
    grouped-query attention, K and V repeated by Unsqueeze -> Expand -> Reshape; kv_count_from_shape
    reads the KV head count from Shape(k) at run time for those targets, as the TorchScript export does.
    position_bias: one learned value per head and key position added to the scores (T5; needs dynamic).
    width_from_shape: the merge target's last entry is ReduceProd(Shape(o)[2:4]), heads times head_dim
    read at run time (tf2onnx; needs dynamic)."""
    kv = kv_heads or heads
    rep, d, half = heads // kv, heads * head_dim, head_dim // 2
    g = Graph(opset=opset)
    x = g.input("x", ("N", "T", d) if dynamic else (1, seq, d))
    shp = g.node("Shape", [x], name="x_shape")
    b = g.node("Gather", [shp, g.ints("i0", [0])], name="batch", axis=0)
    t = g.node("Gather", [shp, g.ints("i1", [1])], name="seq", axis=0)

    def target(name: str, *entries: str | Sequence[int]) -> str:
        parts = [e if isinstance(e, str) else g.ints(f"{name}_{k}", list(e)) for k, e in enumerate(entries)]
        return g.node("Concat", parts, name=name, axis=0)

    def split(y: str, h: int, name: str) -> str:
        tgt = target(f"{name}_target", b, t, [-1, head_dim]) if dynamic else g.ints(f"{name}_target",
                                                                                    [1, seq, h, head_dim])
        return g.node("Transpose", [g.node("Reshape", [y, tgt], name=f"{name}_rs")], name=f"{name}_heads",
                      perm=[0, 2, 1, 3])

    q = split(g.matmul(x, d, d, bias=True, name="q"), heads, "q")
    k = split(g.matmul(x, d, kv * head_dim, bias=True, name="k"), kv, "k")
    v = split(g.matmul(x, d, kv * head_dim, bias=True, name="v"), kv, "v")
    if rope is not None:
        if rope == "computed":
            pos = g.node("Range", [g.const("zero", np.array(0, dtype=np.int64)),
                                   g.node("Squeeze", [t, g.ints("sq0", [0])], name="t_scalar"),
                                   g.const("one", np.array(1, dtype=np.int64))], name="positions")
            pos = g.node("Unsqueeze", [g.node("Cast", [pos], name="pos_f", to=onnx.TensorProto.FLOAT),
                                       g.ints("ax1", [1])], name="pos_col")
            inv = g.const("inv_freq", (1.0 / 10000 ** (np.arange(half) / half)).astype(np.float32).reshape(1, half))
            freqs = g.node("Mul", [pos, inv], name="freqs")
            emb = g.node("Concat", [freqs, freqs], name="emb", axis=-1)
            cos = g.node("Unsqueeze", [g.node("Cos", [emb], name="cos_raw"), g.ints("ax01", [0, 1])], name="cos")
            sin = g.node("Unsqueeze", [g.node("Sin", [emb], name="sin_raw"), g.ints("ax01b", [0, 1])], name="sin")
        else:
            angles = np.arange(seq)[:, None] * np.concatenate([np.arange(1, half + 1)] * 2)[None, :] * 0.3
            cos = g.const("cos", np.cos(angles).astype(np.float32)[None, None])
            sin = g.const("sin", np.sin(angles).astype(np.float32)[None, None])

        def rotary(y: str, name: str) -> str:
            x1 = g.node("Slice", [y, g.ints(f"{name}_s0", [0]), g.ints(f"{name}_e0", [half]), g.ints(f"{name}_a0", [3])],
                        name=f"{name}_x1")
            x2 = g.node("Slice", [y, g.ints(f"{name}_s1", [half]), g.ints(f"{name}_e1", [INT_MAX]),
                                  g.ints(f"{name}_a1", [3])], name=f"{name}_x2")
            rot = g.node("Concat", [g.node("Neg", [x2], name=f"{name}_neg"), x1], name=f"{name}_rot", axis=-1)
            return g.node("Add", [g.node("Mul", [y, cos], name=f"{name}_cos"),
                                  g.node("Mul", [rot, sin], name=f"{name}_sin")], name=f"{name}_rope")

        q, k = rotary(q, "q"), rotary(k, "k")
    if rep > 1:
        def repeat(y: str, name: str) -> str:
            u = g.node("Unsqueeze", [y, g.ints(f"{name}_ax2", [2])], name=f"{name}_u")
            if kv_count_from_shape:
                count = g.node("Gather", [g.node("Shape", [y], name=f"{name}_shape"), g.ints(f"{name}_i1", [1])],
                               name=f"{name}_count", axis=0)
                times = g.node("Mul", [count, g.const(f"{name}_nrep", np.array(rep, dtype=np.int64))], name=f"{name}_times")
                spec = target(f"{name}_spec", b, count, [rep], t, [head_dim])
                merged = target(f"{name}_merged", b, times, t, [head_dim])
            elif dynamic:
                spec = target(f"{name}_spec", b, [kv, rep], t, [head_dim])
                merged = target(f"{name}_merged", b, [heads], t, [head_dim])
            else:
                spec = g.ints(f"{name}_spec", [1, kv, rep, seq, head_dim])
                merged = g.ints(f"{name}_merged", [1, heads, seq, head_dim])
            return g.node("Reshape", [g.node("Expand", [u, spec], name=f"{name}_expand"), merged], name=f"{name}_rep")

        k, v = repeat(k, "k"), repeat(v, "v")
    s = g.node("MatMul", [q, g.node("Transpose", [k], name="k_t", perm=[0, 1, 3, 2])], name="qk")
    s = g.node("Mul", [s, g.const("scale", np.array(head_dim ** -0.5, dtype=np.float32))], name="scaled")
    if position_bias:
        pos = g.node("Range", [g.const("zero", np.array(0, dtype=np.int64)),
                               g.node("Squeeze", [t, g.ints("sq0", [0])], name="t_scalar"),
                               g.const("one", np.array(1, dtype=np.int64))], name="positions")
        table = g.rand("bias_table", (16, heads))
        bias = g.node("Transpose", [g.node("Gather", [table, pos], name="bias_rows", axis=0)], name="bias_t", perm=[1, 0])
        s = g.node("Add", [s, g.node("Unsqueeze", [bias, g.ints("ax02", [0, 2])], name="bias")], name="biased")
    p = g.node("Softmax", [s], name="softmax", axis=-1)
    o = g.node("Transpose", [g.node("MatMul", [p, v], name="pv")], name="o_t", perm=[0, 2, 1, 3])
    if width_from_shape:
        hd = g.node("Slice", [g.node("Shape", [o], name="o_shape"), g.ints("s2", [2]), g.ints("e4", [4])], name="o_hd")
        merge = target("merge_target", b, t, g.node("ReduceProd", [hd], name="o_width", keepdims=1))
    elif dynamic:
        merge = target("merge_target", b, t, [-1])
    else:
        merge = g.ints("merge_target", [1, seq, d])
    o = g.node("Reshape", [o, merge], name="merge")
    g.output(g.matmul(o, d, d, bias=True, name="out"))
    return g.build()


SHAPES = {"x": (2, 5, 16)}


def slots_of(dg: DependencyGraph, source: str, channels: Sequence[int]) -> list[int]:
    """The slot indices (in the group of `source`) holding these output channels of `source`."""
    grp = group_of(dg, source)
    src = next(s for s in dg.analysis.sources if s.node == source)
    roots = set(map_roots(dg.analysis.roots, src.ids[list(channels)]).tolist())
    return [i for i, r in enumerate(grp.slots.tolist()) if r in roots]


def head_plan(dg: DependencyGraph, source: str, channels: Sequence[int]) -> Plan:
    grp = group_of(dg, source)
    return Plan({grp.id: slots_of(dg, source, channels)}, signatures={grp.id: list(grp.sources)})


def cols(heads: Sequence[int], head_dim: int) -> list[int]:
    return [h * head_dim + j for h in heads for j in range(head_dim)]


def test_whole_heads_couple_q_k_v_and_the_output_rows() -> None:
    model = attention_block()
    dg = analyse(model, heads="whole")
    grp = group_of(dg, "q")
    assert sorted(grp.sources) == ["k", "q", "v"] and grp.kind == "head" and not grp.shared_kv
    assert grp.prunable and grp.size == 4 and grp.width == 4 and not grp.strided
    assert group_of(dg, "out").kind == "channel"
    r = checked_prune(model, dg=dg, plan=head_plan(dg, "q", cols([1, 3], 4)))
    keep = cols([0, 2], 4)
    for name in ("q", "k", "v"):
        np.testing.assert_array_equal(init(r.model, f"{name}.w"), init(model, f"{name}.w")[:, keep])
    np.testing.assert_array_equal(init(r.model, "out.w"), init(model, "out.w")[keep])
    np.testing.assert_array_equal(node_const(r.model, "q_rs", 1), [1, 5, 2, 4])  # 2 heads of 4
    np.testing.assert_array_equal(node_const(r.model, "merge", 1), [1, 5, 8])
    exercise(model, shapes=None)


def test_head_dim_mode_removes_one_index_of_every_head() -> None:
    model = attention_block()
    dg = analyse(model, heads="dim")
    qk, v = group_of(dg, "q"), group_of(dg, "v")
    assert sorted(qk.sources) == ["k", "q"] and qk.kind == v.kind == "head_dim" and qk.size == 4 and qk.strided
    r = checked_prune(model, dg=dg, plan=head_plan(dg, "q", [1]))
    np.testing.assert_array_equal(node_const(r.model, "q_rs", 1), [1, 5, 4, 3])
    assert init(r.model, "q.w").shape == (16, 12)


def test_auto_takes_whole_heads_and_falls_back_to_head_dim_for_one_kv_head() -> None:
    assert group_of(analyse(attention_block()), "q").kind == "head"
    mqa = attention_block(kv_heads=1)  # multi-query attention: one KV group holds every head
    assert group_of(analyse(mqa, heads="whole"), "q").size == 1
    dg = analyse(mqa)
    assert dg.analysis.heads == "auto" and group_of(dg, "q").kind == "head_dim" and group_of(dg, "q").prunable
    exercise(mqa)


@pytest.mark.parametrize("dynamic", [False, True])
def test_gqa_kv_group_is_one_slot(dynamic: bool) -> None:
    """4 query heads share 2 KV heads through Unsqueeze -> Expand -> Reshape (repeat_kv): a slot is a KV
    head with its 2 query heads; a constant Expand shape follows, a run-time one gets 1 on the head axis."""
    model = attention_block(kv_heads=2, dynamic=dynamic)
    shapes = SHAPES if dynamic else None
    dg = analyse(model, heads="whole", shapes=shapes)
    grp = group_of(dg, "q")
    assert sorted(grp.sources) == ["k", "q", "v"] and grp.kind == "head" and grp.shared_kv and grp.size == 2
    r = checked_prune(model, dg=dg, plan=head_plan(dg, "k", cols([0], 4)), shapes=shapes)
    np.testing.assert_array_equal(init(r.model, "q.w"), init(model, "q.w")[:, cols([2, 3], 4)])
    np.testing.assert_array_equal(init(r.model, "k.w"), init(model, "k.w")[:, cols([1], 4)])
    np.testing.assert_array_equal(init(r.model, "out.w"), init(model, "out.w")[cols([2, 3], 4)])
    if dynamic:
        assert [n.op_type for n in r.model.graph.node].count("Min") == 2  # one per Expand
        np.testing.assert_array_equal(node_const(r.model, "k_merged", 1), [2])
        feed = random_inputs(model, shapes={"x": (3, 7, 16)})
        assert outputs_of(r.model, feed)["out_bias"].shape == (3, 7, 16)
    else:
        np.testing.assert_array_equal(node_const(r.model, "k_expand", 1), [1, 1, 2, 5, 4])
        np.testing.assert_array_equal(node_const(r.model, "k_rep", 1), [1, 2, 5, 4])
    exercise(model, shapes=shapes)
    dim = analyse(model, heads="dim", shapes=shapes)
    assert group_of(dim, "q").kind == "head_dim" and sorted(group_of(dim, "q").sources) == ["k", "q"]
    exercise(model, shapes=shapes, heads="dim")


def test_kv_head_count_read_at_run_time_follows_the_heads() -> None:
    """The TorchScript export reads the KV head count from Shape(k) (ONNX cannot prove it static behind a
    Reshape with -1) and multiplies it by n_rep for the repeat_kv target: the pruned model reads the
    pruned count, which is what its Reshape needs; nothing is rewritten there."""
    model = attention_block(kv_heads=2, dynamic=True, kv_count_from_shape=True)
    dg = analyse(model, shapes=SHAPES)
    assert any(n.op_type == "Shape" and n.name == "k_shape" for n in dg.model.graph.node)
    grp = group_of(dg, "q")
    assert grp.kind == "head" and grp.prunable and grp.size == 2
    r = checked_prune(model, dg=dg, plan=head_plan(dg, "k", cols([1], 4)), shapes=SHAPES)
    feed = random_inputs(model, shapes={"x": (1, 3, 16)})
    assert outputs_of(r.model, feed)["out_bias"].shape == (1, 3, 16)
    exercise(model, shapes=SHAPES)


@pytest.mark.parametrize("rope", ["const", "computed"])
def test_rope_head_dim_keeps_rotate_half_pairs_together(rope: str) -> None:
    """q*cos + rotate_half(q)*sin: index d and d + D/2 are one slot; the Slice bounds follow and the
    cos/sin tables lose the same indices (a sliced constant, or a Gather on the computed tables)."""
    dynamic = rope == "computed"
    shapes = SHAPES if dynamic else None
    model = attention_block(head_dim=8, heads=2, rope=rope, dynamic=dynamic)
    dg = analyse(model, heads="dim", shapes=shapes)
    grp = group_of(dg, "q")
    assert grp.kind == "head_dim" and sorted(grp.sources) == ["k", "q"] and grp.size == 4  # 8 indices, 4 pairs
    assert slots_of(dg, "q", [1]) == slots_of(dg, "q", [5]) == slots_of(dg, "k", [13])
    r = checked_prune(model, dg=dg, plan=head_plan(dg, "q", [1]), shapes=shapes)
    keep = [c for c in range(16) if c % 8 not in (1, 5)]
    np.testing.assert_array_equal(init(r.model, "q.w"), init(model, "q.w")[:, keep])
    np.testing.assert_array_equal(node_const(r.model, "q_x1", 2), [3])
    np.testing.assert_array_equal(node_const(r.model, "q_x2", 1), [3])
    gathers = [n for n in r.model.graph.node if n.op_type == "Gather" and n.name.endswith("__kept_3")]
    if rope == "const":
        assert not gathers and node_const(r.model, "q_cos", 1).shape == (1, 1, 5, 6)
    else:
        assert len(gathers) == 4  # cos and sin, for q and for k
        feed = random_inputs(model, shapes={"x": (1, 9, 16)})
        assert outputs_of(r.model, feed)["out_bias"].shape == (1, 9, 16)
    exercise(model, shapes=shapes)


@pytest.mark.parametrize("rope", ["const", "computed"])
def test_rope_leaves_the_tables_alone_when_whole_heads_go(rope: str) -> None:
    dynamic = rope == "computed"
    shapes = SHAPES if dynamic else None
    model = attention_block(heads=4, kv_heads=2, rope=rope, dynamic=dynamic)
    dg = analyse(model, shapes=shapes)
    assert group_of(dg, "q").kind == "head"
    r = checked_prune(model, dg=dg, plan=head_plan(dg, "k", cols([1], 4)), shapes=shapes)
    assert not any(n.name.endswith("__kept_3") for n in r.model.graph.node)
    np.testing.assert_array_equal(node_const(r.model, "q_x1", 2), [2])
    exercise(model, shapes=shapes)


def test_a_position_bias_per_head_goes_with_its_head() -> None:
    """T5 adds a learned value per head to the scores, computed at run time: with whole heads the
    removed head's row is cut (a Gather); with head_dim units the bias is untouched."""
    model = attention_block(dynamic=True, position_bias=True)
    dg = analyse(model, heads="whole", shapes=SHAPES)
    assert group_of(dg, "q").kind == "head" and group_of(dg, "q").prunable
    r = checked_prune(model, dg=dg, plan=head_plan(dg, "q", cols([2], 4)), shapes=SHAPES)
    cut = next(n for n in r.model.graph.node if n.op_type == "Gather" and n.input[0] == "bias")
    np.testing.assert_array_equal(init(r.model, cut.input[1]), [0, 1, 3])
    exercise(model, shapes=SHAPES)
    exercise(model, shapes=SHAPES, heads="dim")


@pytest.mark.parametrize("heads", ["whole", "dim"])
def test_heads_times_head_dim_read_at_run_time_follows_either_unit(heads: str) -> None:
    """tf2onnx merges the heads with ReduceProd(Shape(o)[2:4]): a product of two channel counts, right
    for the pruned model as long as one of the two axes never shrinks (head_dim under whole heads,
    the heads under head_dim)."""
    model = attention_block(dynamic=True, width_from_shape=True)
    dg = analyse(model, heads=heads, shapes=SHAPES)
    assert any(n.op_type == "ReduceProd" for n in dg.model.graph.node)
    assert group_of(dg, "v").prunable and group_of(dg, "v").kind == ("head" if heads == "whole" else "head_dim")
    exercise(model, shapes=SHAPES, heads=heads)


def test_a_head_axis_the_other_operand_cannot_follow_blocks_whole_heads() -> None:
    """V comes from the input without a projection, so its heads carry no channels: whole heads of q/k
    cannot go (the scores' head axis must stay as wide as V's). Auto falls back to head_dim."""
    g = Graph(opset=17)
    x = g.input("x", (1, 5, 16))
    q = g.node("Transpose", [g.node("Reshape", [g.matmul(x, 16, 16, name="q"), g.ints("qt", [1, 5, 4, 4])],
                                    name="q_rs")], name="q_h", perm=[0, 2, 1, 3])
    k = g.node("Transpose", [g.node("Reshape", [g.matmul(x, 16, 16, name="k"), g.ints("kt", [1, 5, 4, 4])],
                                    name="k_rs")], name="k_h", perm=[0, 2, 3, 1])
    v = g.node("Transpose", [g.node("Reshape", [x, g.ints("vt", [1, 5, 4, 4])], name="v_rs")], name="v_h",
               perm=[0, 2, 1, 3])
    p = g.node("Softmax", [g.node("MatMul", [q, k], name="qk")], name="softmax", axis=-1)
    g.output(g.node("MatMul", [p, v], name="pv"))
    model = g.build()
    whole = analyse(model, heads="whole")
    assert "channels on a MatMul batch axis that the other operand cannot follow" in reasons(whole, "q")
    auto = analyse(model)
    assert group_of(auto, "q").kind == "head_dim" and group_of(auto, "q").prunable
    exercise(model)


def test_plan_records_and_checks_the_unit_kind(tmp_path: Path) -> None:
    model = attention_block()
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=head_plan(dg, "q", cols([0], 4)))
    path = tmp_path / "plan.json"
    r.plan.save(path)
    loaded = Plan.load(path)
    assert loaded.kinds == {group_of(dg, "q").id: "head"}
    dim = analyse(model, heads="dim")
    with pytest.raises(OnnxPruneError, match="--heads mode it was made with|another model"):
        loaded.removed_roots(dim)


def test_cli_heads_option_on_inspect_prune_and_plan_replay(tmp_path: Path) -> None:
    """`--heads` reaches the analysis; inspect names the unit kinds, the saved plan records them, and a
    plan replayed under another mode is refused with one line (exit 2)."""
    src = tmp_path / "attn.onnx"
    onnx.save(attention_block(), str(src))
    code, out, _ = invoke("inspect", str(src), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["summary"]["heads"] == "auto" and data["summary"]["prunable_by_unit"]["head"] == 1
    assert {g["kind"] for g in data["groups"]} == {"head", "channel"}
    code, out, _ = invoke("inspect", str(src), "--heads", "dim")
    assert code == 0 and "head_dim slots" in out and "--heads dim: prunable attention groups by unit: 2 head_dim" in out
    plan, report = tmp_path / "plan.json", tmp_path / "report.json"
    code, out, err = invoke("prune", str(src), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--round-to", "1",
                            "--heads", "whole", "--save-plan", str(plan), "--report", str(report))
    assert code == 0, err
    assert [g["kind"] for g in json.loads(plan.read_text())["groups"]] == ["head"]
    decisions = json.loads(report.read_text())["groups"]
    assert {d["kind"] for d in decisions} == {"head", "channel"}
    code, _, err = invoke("prune", str(src), "-o", str(tmp_path / "q.onnx"), "--plan", str(plan), "--heads", "dim")
    assert code == 2 and "--heads" in one_line_error(err)
    code, _, err = invoke("prune", str(src), "-o", str(tmp_path / "q.onnx"), "--plan", str(plan), "--heads", "whole")
    assert code == 0, err


def test_sensitivity_curves_name_the_heads_mode(tmp_path: Path) -> None:
    model = attention_block()
    curves = sensitivity_curves(analyse(model, heads="dim"), ratios=(0.5,), samples=2)
    assert curves.heads == "dim"
    path = tmp_path / "s.json"
    curves.save(path)
    with pytest.raises(OnnxPruneError, match="measured with --heads dim, this run uses auto"):
        SensitivityResult.load(path).curves_for(analyse(model))


def test_a_fused_attention_op_without_a_rule_blocks_only_its_inputs() -> None:
    """ONNX's own `Attention` (opset 23) has no channel rule (no committed model uses it): the Q/K/V
    projections feeding it are blocked with its name, the FFN after it still prunes."""
    g = Graph(opset=23)
    x = g.input("x", (1, 5, 16))
    q, k, v = (g.matmul(x, 16, 16, name=n) for n in "qkv")
    o = g.node("Attention", [q, k, v], name="attn", q_num_heads=4, kv_num_heads=4)
    g.output(g.matmul(g.relu(g.matmul(o, 16, 32, name="up")), 32, 16, name="down"))
    model = g.build(ir_version=11)
    dg = analyse(model)
    for name in "qkv":
        assert reasons(dg, name) == "Attention 'attn': no channel rule for Attention (opset 23)"
    assert group_of(dg, "up").prunable
    exercise(model)


def test_a_second_step_through_run_time_repeat_kv_keeps_node_names_unique() -> None:
    """Each step caps the run-time repeat_kv target with a Min inserted before the same Expand: the
    second must not reuse the first one's node name (ONNX Runtime refuses such a model)."""
    model = attention_block(heads=8, kv_heads=4, dynamic=True, kv_count_from_shape=True)
    r = prune(model, target_params=0.5, steps=2, recipe="fast", verify=True, shapes={"x": (2, 5, 32)}, round_to=1)
    mins = [n.name for n in r.model.graph.node if n.op_type == "Min"]
    assert len(mins) >= 2 and r.steps is not None and len(r.steps.steps) == 2
    names = [n.name for n in r.model.graph.node]
    assert len(names) == len(set(names))
    assert r.verify is not None and r.verify.ok
    assert_valid(r.model)
