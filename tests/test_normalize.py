"""Normalisation: Constant nodes and constant subgraphs become initializers, static Shape reads fold,
dynamic ones stay, the caller's model is untouched, and opset/metadata/names survive."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, exercise, group_of, outputs_of
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import analyse, prune
from onnxprune.passes.normalize import Normalize


def normalise(model: onnx.ModelProto) -> onnx.ModelProto:
    return Normalize()(model).model


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def assert_same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, feed: dict[str, np.ndarray]) -> None:
    want, got = outputs_of(a, feed), outputs_of(b, feed)
    assert list(want) == list(got)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def constant_node(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(value, name))


def paddle_style() -> onnx.ModelProto:
    """Every weight is a Constant node (the way Paddle2ONNX and dynamo exports write them)."""
    rng = np.random.default_rng(0)
    consts = {
        "w1": (rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32),
        "b1": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "w2": (rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32),
    }
    nodes = [constant_node(k, v) for k, v in consts.items()]
    nodes += [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y1"], ["r1"], name="relu"),
        helper.make_node("Constant", [], ["alpha"], name="const_alpha", value_float=0.5),
        helper.make_node("Mul", ["r1", "alpha"], ["m1"], name="scale"),
        helper.make_node("Conv", ["m1", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "paddle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


FEED = {"x": np.random.default_rng(1).standard_normal((1, 4, 6, 6)).astype(np.float32)}


def test_constant_nodes_become_initializers() -> None:
    model = paddle_style()
    norm = normalise(model)
    assert "Constant" not in op_types(norm)
    inits = {t.name for t in norm.graph.initializer}
    assert {"w1", "b1", "w2", "alpha"} <= inits
    assert_same_outputs(model, norm, FEED)
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    exercise(model)


def test_constant_node_that_is_a_graph_output_stays() -> None:
    nodes = [constant_node("k", np.arange(3, dtype=np.float32)),
             helper.make_node("Relu", ["x"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3]),
                               helper.make_tensor_value_info("k", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    norm = normalise(model)
    assert "Constant" in op_types(norm)
    assert [o.name for o in norm.graph.output] == ["y", "k"]


def folded_weights_model() -> onnx.ModelProto:
    """Weights made by small constant subgraphs: Transpose of an HWIO weight, Cast, ConstantOfShape."""
    g = Graph(opset=13)
    x = g.input("x", ("N", 4, 6, 6))
    hwio = g.const("w_hwio", (0.3 * g.rng.standard_normal((3, 3, 4, 8))).astype(np.float32))
    w = g.node("Transpose", [hwio], name="w_oihw", perm=[3, 2, 0, 1])
    b64 = g.const("b64", (0.1 * g.rng.standard_normal(8)).astype(np.float64))
    b = g.node("Cast", [b64], name="b_f32", to=TensorProto.FLOAT)
    y = g.relu(g.node("Conv", [x, w, b], name="c1", pads=[1, 1, 1, 1]))
    ones = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    scale = g.node("ConstantOfShape", [g.ints("scale_shape", [8, 1, 1])], name="scale", value=ones)
    y = g.node("Mul", [y, scale], name="scaled")
    g.output(g.conv(y, 8, 4, name="head"))
    return g.build()


def test_constant_subgraphs_folded() -> None:
    model = folded_weights_model()
    norm = normalise(model)
    assert not {"Transpose", "Cast", "ConstantOfShape"} & set(op_types(norm))
    c1 = next(n for n in norm.graph.node if n.name == "c1")
    inits = {t.name: numpy_helper.to_array(t) for t in norm.graph.initializer}
    assert inits[c1.input[1]].shape == (8, 4, 3, 3) and inits[c1.input[1]].dtype == np.float32
    assert inits[c1.input[2]].dtype == np.float32
    feed = {"x": np.random.default_rng(2).standard_normal((3, 4, 6, 6)).astype(np.float32)}
    assert_same_outputs(model, norm, feed)
    dg = analyse(model, shapes={"x": (1, 4, 6, 6)})
    assert group_of(dg, "c1").prunable
    exercise(model, shapes={"x": (2, 4, 6, 6)})


def shape_gather_model() -> onnx.ModelProto:
    """Reshape target Concat(Shape(x)[0], Shape(x)[1] * 9, [-1]... ): static dims fold, the batch stays."""
    g = Graph(opset=13)
    x = g.input("x", ("N", 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    shape = g.node("Shape", [y], name="shape")
    n = g.node("Gather", [shape, g.ints("i0", [0])], name="batch", axis=0)
    c = g.node("Gather", [shape, g.ints("i1", [1])], name="chan", axis=0)
    y = g.node("Reshape", [y, g.node("Concat", [n, c, g.ints("m1", [-1])], name="target", axis=0)], name="rs")
    y = g.node("Softmax", [y], name="sm", axis=-1)
    y = g.node("Reshape", [y, g.node("Concat", [n, c, g.ints("hw", [6, 6])], name="target2", axis=0)],
               name="rs2")
    g.output(g.conv(y, 8, 4, name="head"))
    return g.build()


def test_shape_gather_static_dim_folded_dynamic_batch_stays() -> None:
    model = shape_gather_model()
    norm = normalise(model)
    names = {n.name for n in norm.graph.node}
    assert "chan" not in names  # the static channel dim is a constant now
    assert {"shape", "batch"} <= names  # the dynamic batch is still read at run time
    inits = {t.name: numpy_helper.to_array(t) for t in norm.graph.initializer}
    np.testing.assert_array_equal(inits["chan"], [8])
    feed = {"x": np.random.default_rng(3).standard_normal((3, 4, 6, 6)).astype(np.float32)}
    assert_same_outputs(model, norm, feed)
    shapes = {"x": (2, 4, 6, 6)}
    dg = analyse(model, shapes=shapes)
    assert group_of(dg, "c1").prunable
    for r in exercise(model, shapes=shapes):
        got = outputs_of(r.model, feed)
        assert got["head"].shape == (3, 4, 6, 6)


def test_shape_with_start_then_gather_folds_the_right_dim() -> None:
    """Shape(x, start=1)[0] is C; x has a dynamic H so the Shape itself is not folded."""
    g = Graph(opset=15)
    x = g.input("x", (1, 4, "H", 6))
    c = g.node("Gather", [g.node("Shape", [x], name="chw", start=1), g.ints("i0", [0])], name="c", axis=0)
    c = g.node("Cast", [c], name="cf", to=TensorProto.FLOAT)
    g.output(g.node("Mul", [x, c], name="y"))
    model = g.build()
    feed = {"x": np.ones((1, 4, 5, 6), dtype=np.float32)}
    assert_same_outputs(model, normalise(model), feed)


def conv1d_model(*, cast: bool) -> onnx.ModelProto:
    """GPT-2's Conv1D as exported by TorchScript: Reshape(x, [-1, Shape(x)[-1:]]) -> Gemm -> Reshape back to
    [Shape(x)[0], Shape(x)[1], N]; with `cast`, tf2onnx's Cast(Shape) -> Gather and an int32 target."""
    g = Graph(opset=13)
    x = g.input("x", ("N", "T", 8))
    shape = g.node("Shape", [x], name="shape")
    if cast:
        shape = g.node("Cast", [shape], name="shape32", to=TensorProto.INT32)
    last = g.node("Squeeze", [g.node("Slice", [shape, g.ints("s", [-1]), g.ints("e", [2**62])], name="last"),
                              g.ints("sq", [0])], name="width")
    width = g.node("Unsqueeze", [last, g.ints("unsq", [0])], name="width1")
    minus1 = g.const("m1", np.array([-1], dtype=np.int32 if cast else np.int64))
    target = g.node("Concat", [minus1, width], name="flat_target", axis=0)
    if cast:
        target = g.node("Cast", [target], name="flat_target64", to=TensorProto.INT64)
    y = g.relu(g.gemm(g.node("Reshape", [x, target], name="flat"), 8, 12, name="fc1"))
    lead = g.node("Gather", [shape, g.ints("i01", [0, 1])], name="lead")
    back = g.node("Concat", [lead, g.const("n", np.array([12], dtype=np.int32 if cast else np.int64))],
                  name="back_target", axis=0)
    if cast:
        back = g.node("Cast", [back], name="back_target64", to=TensorProto.INT64)
    y = g.node("Reshape", [y, back], name="back")
    g.output(g.matmul(y, 12, 4, name="fc2"))
    return g.build()


@pytest.mark.parametrize("cast", [False, True])
def test_shape_slice_of_static_dim_folds_through_casts_and_concats(cast: bool) -> None:
    """Shape(x)[-1:] (the width 8, static) folds into the flatten target; the batch and sequence read
    at run time stay, so the normalised model runs at any size; fc1's width is then prunable."""
    model = conv1d_model(cast=cast)
    norm = normalise(model)
    names = {n.name for n in norm.graph.node}
    assert not {"last", "width", "width1"} & names and "flat_target" not in names
    assert "lead" in names  # batch and sequence: dynamic
    for shape in ((3, 5, 8), (1, 2, 8)):
        assert_same_outputs(model, norm, {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)})
    shapes = {"x": (2, 5, 8)}
    dg = analyse(model, shapes=shapes)
    assert group_of(dg, "fc1").prunable
    r = prune(model, dg=dg, ratio=0.5, verify=True, shapes=shapes)
    assert r.verify is not None and r.verify.ok
    assert outputs_of(r.model, {"x": np.ones((3, 7, 8), dtype=np.float32)})["fc2"].shape == (3, 7, 4)
    exercise(model, shapes=shapes)


def test_random_ops_are_not_folded() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4))
    noise = g.node("RandomNormal", [], name="noise", shape=[1, 4], seed=1.0)
    g.output(g.node("Add", [x, noise], name="y"))
    assert "RandomNormal" in op_types(normalise(g.build()))


def test_input_model_is_never_modified() -> None:
    for model in (paddle_style(), folded_weights_model(), shape_gather_model()):
        before = model.SerializeToString()
        normalise(model)
        analyse(model, shapes={"x": (1, 4, 6, 6)})
        prune(model, ratio=0.5, verify=True, shapes={"x": (1, 4, 6, 6)})
        assert model.SerializeToString() == before


def rich_model() -> onnx.ModelProto:
    g = Graph(opset=17, domains={"com.microsoft": 1})
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="first_conv"), name="act")
    g.output(g.conv(y, 8, 4, name="last_conv"))
    model = g.build(name="my_graph")
    model.producer_name = "unit-test"
    model.producer_version = "1.2.3"
    model.doc_string = "a model with metadata"
    model.model_version = 7
    helper.set_model_props(model, {"author": "tests", "license": "MIT"})
    model.graph.doc_string = "graph doc"
    return model


@pytest.mark.parametrize("stage", ["normalise", "prune"])
def test_opset_metadata_and_names_preserved(stage: str) -> None:
    model = rich_model()
    out = normalise(model) if stage == "normalise" else prune(model, ratio=0.5, verify=True).model
    assert {(o.domain, o.version) for o in out.opset_import} == {(o.domain, o.version) for o in model.opset_import}
    assert out.ir_version == model.ir_version
    assert (out.producer_name, out.producer_version, out.doc_string, out.model_version) == (
        "unit-test", "1.2.3", "a model with metadata", 7)
    assert {p.key: p.value for p in out.metadata_props} == {"author": "tests", "license": "MIT"}
    assert out.graph.name == "my_graph" and out.graph.doc_string == "graph doc"
    assert [n.name for n in out.graph.node] == ["first_conv", "act", "last_conv"]
    assert [i.name for i in out.graph.input] == ["x"] and [o.name for o in out.graph.output] == ["last_conv"]


def test_unnamed_and_duplicate_nodes_get_unique_names() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    g.output(g.conv(y, 8, 4, name="c2"))
    model = g.build()
    model.graph.node[1].name = ""
    dup = onnx.ModelProto()
    dup.CopyFrom(model)
    dup.graph.node[2].name = "c1"
    names = [n.name for n in normalise(dup).graph.node]
    assert len(set(names)) == 3 and all(names) and names[0] == "c1"
    assert [n.name for n in normalise(model).graph.node][1]
    assert len(analyse(model).prunable) == 1
    exercise(model)  # (ONNX Runtime refuses duplicate names, so only the unnamed model is pruned)


def test_weights_listed_as_graph_inputs_ir3() -> None:
    g = Graph(opset=9)
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    g.output(g.conv(y, 8, 4, name="c2"))
    model = g.build()
    model.ir_version = 3
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer)
    norm = normalise(model)
    assert [i.name for i in norm.graph.input] == ["x"]
    assert norm.ir_version >= 4
    assert group_of(analyse(model), "c1").prunable
    r = prune(model, ratio=0.5, verify=True)
    assert r.verify is not None and r.verify.ok


def test_normalise_is_idempotent() -> None:
    once = normalise(folded_weights_model())
    twice = normalise(once)
    assert once.SerializeToString() == twice.SerializeToString()


def shared_target_heads() -> onnx.ModelProto:
    """Two projections split into heads by Reshapes that read one target Concat (batch from Shape at
    run time, heads and head dim constant), as the dynamo exporter writes q/k/v head splits."""
    g = Graph(opset=17)
    x = g.input("x", ("batch", 8))
    batch = g.node("Slice", [g.node("Shape", [x]), g.ints("s0", [0]), g.ints("s1", [1])])
    target = g.node("Concat", [batch, g.ints("heads", [2]), g.ints("hdim", [4])], axis=0, name="target")
    outs = []
    for k in ("q", "v"):
        h = g.relu(g.matmul(x, 8, 8, name=f"{k}_proj"))
        heads = g.node("Reshape", [h, target], name=f"{k}_split")
        outs.append(g.node("Reshape", [heads, g.ints(f"{k}_flat", [-1, 8])], name=f"{k}_merge"))
    y = g.node("Add", [g.matmul(outs[0], 8, 4, name="q_out"), g.matmul(outs[1], 8, 4, name="v_out")])
    g.output(y)
    return g.build()


def test_each_reshape_gets_its_own_target() -> None:
    model = shared_target_heads()
    n = normalise(model)
    targets = [node.input[1] for node in n.graph.node if node.op_type == "Reshape" and node.name.endswith("_split")]
    assert len(set(targets)) == 2
    assert_same_outputs(model, n, {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)})


def test_head_groups_sharing_a_target_prune_apart() -> None:
    # Without a target per Reshape, pruning q's heads rewrote v's target too: ORT could not run the model.
    model = shared_target_heads()
    dg = analyse(model, shapes={"x": (3, 8)})
    assert len(dg.prunable) >= 2
    exercise(model, shapes={"x": (3, 8)})
