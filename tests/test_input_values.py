"""Valid values for integer inputs, inferred from the graph (onnxprune.io.input_values, inputs.random_inputs)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, outputs_of
from onnx import TensorProto, helper
from zoo import zoo_entry

from onnxprune.io.input_values import describe_rules, infer_rules
from onnxprune.io.inputs import concrete_shapes, graph_inputs, random_inputs

INT = TensorProto.INT64


def _embedding(g: Graph, ids: str, rows: int, name: str, *, constant_node: bool = False) -> str:
    table = np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)
    if constant_node:  # a raw export: the table in a Constant node, not an initializer
        data = g.node("Constant", [], name=f"{name}.table", value=helper.make_tensor(
            f"{name}.t", TensorProto.FLOAT, table.shape, table.reshape(-1).tolist()))
    else:
        data = g.const(f"{name}.table", table)
    return g.node("Gather", [data, ids], name=name)


def test_an_index_takes_values_below_the_rows_of_the_smallest_table_it_reads() -> None:
    g = Graph(opset=17)
    ids = g.input("ids", ("batch", "seq"), elem=INT)
    flat = g.node("Reshape", [g.node("Cast", [ids], to=TensorProto.INT32), g.ints("flat", [-1])])
    g.output(_embedding(g, flat, 30, "words"))
    g.output(_embedding(g, g.node("Unsqueeze", [ids, g.ints("ax", [0])]), 7, "other", constant_node=True))
    model = g.build()
    assert str(infer_rules(model)["ids"]) == "index below 7"
    feed = random_inputs(model, shapes={"ids": (4, 50)})
    assert feed["ids"].dtype == np.int64 and feed["ids"].min() >= 0 and feed["ids"].max() == 6
    outputs_of(model, feed)  # every index is valid


@pytest.mark.parametrize("use", ["sub_from_one", "where", "mul_after_cast", "cast_to_bool", "reduce_sum"])
def test_a_mask_is_ones(use: str) -> None:
    g = Graph(opset=17)
    mask = g.input("mask", (1, 6), elem=INT)
    x = g.input("x", (1, 6))
    if use == "where":
        cond = g.node("Cast", [mask], to=TensorProto.BOOL, name="cond")
        g.output(g.node("Where", [g.node("Not", [g.node("Not", [cond])]), x, g.const("neg", np.float32(-1e4))]))
    elif use == "cast_to_bool":
        g.output(g.node("Cast", [mask], to=TensorProto.BOOL), elem=TensorProto.BOOL)
    elif use == "reduce_sum":
        g.output(g.node("ReduceSum", [mask, g.ints("axes", [1])]), elem=INT)
    else:
        f = g.node("Cast", [g.node("Unsqueeze", [mask, g.ints("ax", [0])])], to=TensorProto.FLOAT)
        y = g.node("Sub", [g.const("one", np.float32(1.0)), f]) if use == "sub_from_one" else g.node("Mul", [f, x])
        g.output(y)
    model = g.build()
    rules = infer_rules(model)
    assert str(rules["mask"]) == "ones" and str(rules["x"]) == "N(0, 1)"
    assert (random_inputs(model)["mask"] == 1).all()


def test_a_mask_that_also_indexes_a_table_is_ones() -> None:
    g = Graph(opset=17)
    ids = g.input("ids", (1, 6), elem=INT)
    g.output(_embedding(g, ids, 5, "words"))
    g.output(g.node("Sub", [g.ints("one", 1), ids]), elem=INT)
    assert str(infer_rules(g.build())["ids"]) == "ones"


def test_an_integer_with_no_known_use_says_so() -> None:
    g = Graph(opset=17)
    n = g.input("n", (1, 3), elem=INT)
    g.output(g.node("Add", [n, g.ints("k", [[1, 2, 3]])]), elem=INT)
    model = g.build()
    assert describe_rules(infer_rules(model)) == "n: no rule found: random in [0, 4)"
    assert random_inputs(model)["n"].max() < 4


def test_genai_lengths_agree_with_the_sequence_and_the_cache() -> None:
    g = Graph(opset=17)
    ids = g.input("input_ids", ("batch_size", "sequence_length"), elem=INT)
    mask = g.input("attention_mask", ("batch_size", "total_sequence_length"), elem=INT)
    past = g.input("past_key_values.0.key", ("batch_size", 2, "past_sequence_length", 4))
    seqlens = g.input("seqlens_k", ("batch_size",), elem=TensorProto.INT32)
    total = g.input("total_sequence_length", (), elem=TensorProto.INT32)
    g.output(_embedding(g, ids, 50, "words"))
    g.output(g.node("ReduceSum", [mask, g.ints("axes", [1])]), elem=INT)
    g.output(g.node("Add", [seqlens, total]), elem=TensorProto.INT32)
    g.output(g.node("Relu", [past]))
    model = g.build()
    feed = random_inputs(model, shapes={"input_ids": (2, 5), "past_key_values.0.key": (2, 2, 7, 4)})
    assert feed["attention_mask"].shape == (2, 12) and (feed["attention_mask"] == 1).all()
    assert feed["seqlens_k"].tolist() == [11, 11] and feed["seqlens_k"].dtype == np.int32
    assert int(feed["total_sequence_length"]) == 12 and feed["total_sequence_length"].shape == ()
    rules = infer_rules(model)
    assert str(rules["seqlens_k"]) == "total sequence length - 1" and str(rules["input_ids"]) == "index below 50"


def test_a_kv_cache_is_empty_unless_given() -> None:
    """GenAI's cache inputs: past_sequence_length 0 (a prefill), so the total length is the sequence length
    (a longer total overruns the rotary caches GroupQueryAttention checks it against)."""
    g = Graph(opset=17)
    ids = g.input("input_ids", ("batch_size", "sequence_length"), elem=INT)
    mask = g.input("attention_mask", ("batch_size", "total_sequence_length"), elem=INT)
    past = g.input("past_key_values.0.key", ("batch_size", 2, "past_sequence_length", 4))
    other = g.input("past_key_values.0.value", ("batch_size", 2, "past_len", 4))  # axis 2 of a cache, any name
    g.output(_embedding(g, ids, 50, "words"))
    g.output(g.node("ReduceSum", [mask, g.ints("axes", [1])]), elem=INT)
    g.output(g.node("Relu", [past]))
    g.output(g.node("Relu", [other]))
    model = g.build()
    sizes = concrete_shapes(graph_inputs(model))
    assert sizes["past_key_values.0.key"] == (1, 2, 0, 4) and sizes["past_key_values.0.value"] == (1, 2, 0, 4)
    assert sizes["attention_mask"] == sizes["input_ids"] == (1, 64)
    assert random_inputs(model)["past_key_values.0.key"].size == 0


def test_a_named_dynamic_dim_follows_the_shapes_given_for_another_input() -> None:
    entry = zoo_entry("bert3_ts")
    specs = graph_inputs(onnx.load(str(entry.path)))
    sizes = concrete_shapes(specs, shapes={"input_ids": (2, 9)})
    assert sizes == {"input_ids": (2, 9), "attention_mask": (2, 9), "token_type_ids": (2, 9)}


def test_the_three_input_bert_runs_on_its_inferred_inputs() -> None:
    """Random ints in [0, 4) made ORT's Gather fail on the 2-row token-type table (exit 2 in inspect/prune)."""
    model = onnx.load(str(zoo_entry("bert3_ts").path))
    feed = random_inputs(model, shapes={"input_ids": (2, 16)}, seed=3)
    assert feed["token_type_ids"].max() <= 1 and (feed["attention_mask"] == 1).all()
    assert all(np.isfinite(v).all() for v in outputs_of(model, feed).values())


def test_a_boolean_mask_is_all_true_and_other_booleans_random() -> None:
    g = Graph(opset=17)
    mask = g.input("mask", (1, 64), elem=TensorProto.BOOL)
    flag = g.input("flag", (1, 64), elem=TensorProto.BOOL)
    x = g.input("x", (1, 64))
    g.output(g.node("Where", [mask, x, g.const("low", np.float32(-1e4))]))
    g.output(g.node("And", [flag, flag]), elem=TensorProto.BOOL)
    model = g.build()
    assert {k: str(v) for k, v in infer_rules(model).items()} == {
        "mask": "ones", "flag": "random booleans", "x": "N(0, 1)"}
    feed = random_inputs(model)
    assert feed["mask"].dtype == np.bool_ and feed["mask"].all() and not feed["flag"].all()
