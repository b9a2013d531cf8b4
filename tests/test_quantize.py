"""onnxprune.deploy.quantize: static INT8 Q/DQ by ONNX Runtime's quantizer, on tiny graphs and the digits model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import Graph
from onnx import numpy_helper

from onnxprune.calib.source import CalibConfig
from onnxprune.deploy.qdq import Producers, int8_layers, quantized_weight
from onnxprune.deploy.quantize import QuantizeOptions, quantize
from onnxprune.errors import OnnxPruneError
from onnxprune.io.runtime import run
from onnxprune.passes.sparsify import sparsify
from onnxprune.sparsity.layout import is_nm_compliant

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits"


def resblock() -> onnx.ModelProto:
    """conv -> relu -> conv + skip -> relu -> conv; every layer 16 channels (2:4 needs multiples of 4)."""
    g = Graph(seed=1)
    x = g.input("x", ("N", 8, 6, 6))
    a = g.relu(g.conv(x, 8, 16, name="stem"), name="r0")
    b = g.conv(g.relu(g.conv(a, 16, 16, name="c1"), name="r1"), 16, 16, name="c2")
    s = g.relu(g.node("Add", [b, a], name="add"), name="r2")
    g.output(g.conv(s, 16, 8, name="head"))
    return g.build()


def feeds(model: onnx.ModelProto, n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shape = [8 if isinstance(d, str) else d for d in
             (dim.dim_param or dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim)]
    return [{model.graph.input[0].name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
def test_every_conv_becomes_int8_and_outputs_stay_close(target: str) -> None:
    model = resblock()
    data = feeds(model)
    res = quantize(model, calibration=data, options=QuantizeOptions(target=target))
    assert [d.node for d in res.int8_layers] == ["stem", "c1", "c2", "head"]
    assert {layer.node for layer in int8_layers(res.model)} == {"stem", "c1", "c2", "head"}
    assert res.samples == 4 * 8
    x = data[0]
    ref, got = next(iter(run(model, x).values())), next(iter(run(res.model, x).values()))
    assert cosine(ref, got) > 0.99
    assert not np.array_equal(ref, got)  # it really runs through INT8
    assert len(model.graph.node) == 8  # the input model is untouched


def test_tensorrt_placement_symmetric_inputs_only_and_skip_of_the_residual() -> None:
    res = quantize(resblock(), calibration=feeds(resblock()), options=QuantizeOptions(target="tensorrt"))
    view = Producers(res.model)
    nodes = {n.name: n for n in res.model.graph.node}
    for n in res.model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            assert not np.any(view.constant(n.input[2])), n.name  # zero points 0: TensorRT needs them
        if n.op_type == "Conv":
            assert len(n.input) == 3 and n.input[2] in view.inits  # FP32 bias, not an int32 DQ
            assert all(r.op_type != "QuantizeLinear" for r in view.readers.get(n.output[0], []))  # no output Q/DQ
    add = nodes["add"]
    assert add.input[0] == "c2"  # the Conv branch TensorRT fuses the Add into: FP32
    assert view.dequantized(add.input[1]) is not None  # the skip input: Q/DQ
    assert "1 residual Add(s)" in " ".join(res.notes)


def test_two_four_weights_stay_two_four_after_quantization() -> None:
    model = resblock()
    sparse = sparsify(model, pattern=(2, 4)).model
    res = quantize(sparse, calibration=feeds(model), options=QuantizeOptions(target="tensorrt"))
    view = Producers(res.model)
    dense = {t.name: numpy_helper.to_array(t) for t in sparse.graph.initializer}
    checked = 0
    for node in res.model.graph.node:
        q = quantized_weight(view, node) if node.op_type == "Conv" else None
        if q is None:
            continue
        assert q.values.dtype == np.int8 and q.stored in view.inits  # read from the INT8 initializer itself
        w = dense[f"{node.name}.w"]
        assert np.array_equal(q.values == 0, w == 0) or np.all(q.values[w == 0] == 0)
        if is_nm_compliant(w, 1, 2, 4):
            assert is_nm_compliant(q.values, 1, 2, 4), node.name
            checked += 1
    assert checked == res.nm_weights >= 3  # c1, c2, head (the 8-channel stem is 2:4 as well)


def test_score_heads_stay_fp32_unless_asked() -> None:
    g = Graph(seed=2)
    x = g.input("x", ("N", 8, 6, 6))
    f = g.relu(g.conv(x, 8, 16, name="trunk"), name="rt")
    box = g.conv(f, 16, 4, name="box")
    cls = g.node("Sigmoid", [g.conv(f, 16, 3, name="cls")], name="score")
    g.output(g.node("Concat", [box, cls], name="out", axis=1))
    model = g.build()
    data = feeds(model)
    kept = quantize(model, calibration=data)
    fp32 = {d.node: d.reason for d in kept.layers if not d.int8}
    assert set(fp32) == {"cls"} and "score head" in fp32["cls"]
    assert {d.node for d in kept.int8_layers} == {"trunk", "box"}
    both = quantize(model, calibration=data, options=QuantizeOptions(quantize_heads=True))
    assert {d.node for d in both.int8_layers} == {"trunk", "box", "cls"}


def test_keep_patterns_leave_layers_fp32_and_a_typo_is_an_error() -> None:
    model = resblock()
    res = quantize(model, calibration=feeds(model), options=QuantizeOptions(keep=("c*",)))
    assert {d.node: d.int8 for d in res.layers} == {"stem": True, "c1": False, "c2": False, "head": True}
    assert "--keep 'c*'" in next(d.reason for d in res.layers if d.node == "c1")
    with pytest.raises(OnnxPruneError, match="--keep 'nope' matches no node"):
        quantize(model, calibration=feeds(model), options=QuantizeOptions(keep=("nope",)))


def test_entropy_and_percentile_ranges_differ_from_minmax() -> None:
    """ONNX Runtime's defaults make entropy equal min/max (128 bins for 128 levels); ours must not."""
    model = resblock()
    data = feeds(model, n=8)

    def scales(method: str) -> dict[str, float]:
        opts = QuantizeOptions(method=method, target="tensorrt", percentile=99.0)
        m = quantize(model, calibration=data, options=opts).model
        return {t.name: float(numpy_helper.to_array(t).ravel()[0]) for t in m.graph.initializer
                if t.name.endswith("_scale") and t.dims == []}

    mm, ent, pct = scales("minmax"), scales("entropy"), scales("percentile")
    assert mm.keys() == ent.keys() == pct.keys()
    assert sum(ent[k] < mm[k] * 0.99 for k in mm) >= 2  # clipped ranges: smaller scales
    assert sum(pct[k] < mm[k] * 0.99 for k in mm) >= 2


def test_refuses_already_quantized_and_half_precision_models() -> None:
    model = resblock()
    done = quantize(model, calibration=feeds(model)).model
    with pytest.raises(OnnxPruneError, match=r"^the model is already quantized \(\d+ DequantizeLinear/QuantizeLinear"):
        quantize(done, calibration=feeds(model))
    half = onnx.ModelProto()
    half.CopyFrom(model)
    half.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    with pytest.raises(OnnxPruneError, match="input 'x' is float16: quantize takes an FP32 model"):
        quantize(half, calibration=feeds(model))
    packed = onnx.ModelProto()  # an ORT 4-bit op in an otherwise FP32 graph: refused before any work
    packed.CopyFrom(model)
    packed.graph.node.append(onnx.helper.make_node("MatMulBnb4", ["x", "w4"], ["y4"], name="bnb", domain="com.microsoft"))
    with pytest.raises(OnnxPruneError, match=r"^the model is already quantized \(1 MatMulBnb4 node\(s\), e.g. 'bnb'\)"):
        quantize(packed, calibration=feeds(model))


def test_mismatched_calibration_is_the_usual_one_line_error(tmp_path: Path) -> None:
    model = resblock()
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 6, 6), np.float32))
    with pytest.raises(OnnxPruneError) as q:
        quantize(model, calibration=CalibConfig(path=bad))
    with pytest.raises(OnnxPruneError) as s:
        sparsify(model, sparsity=0.5, method="wanda", calibration=CalibConfig(path=bad))
    assert str(q.value) == str(s.value) == (f"{bad}: input 'x' samples have shape (3, 6, 6), "
                                            "the model expects (8, 6, 6)")


def test_digits_int8_within_one_point_of_fp32() -> None:
    model = onnx.load(str(DIGITS / "digits_resnet.onnx"))
    test = np.load(DIGITS / "test.npz")

    def accuracy(m: onnx.ModelProto) -> float:
        return float((run(m, {"input": test["x"]})["logits"].argmax(1) == test["y"]).mean())

    dense = accuracy(model)
    for target in ("ort", "tensorrt"):
        res = quantize(model, calibration=CalibConfig(path=DIGITS / "calib.npz", samples=128),
                       options=QuantizeOptions(target=target))
        assert len(res.int8_layers) == len(res.layers) == 14
        assert accuracy(res.model) >= dense - 0.01, target
