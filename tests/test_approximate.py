"""LayerNorm over channels: blocked by default, opt-in approximate pruning outside the exactness claim."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import analyse, prune
from onnxprune.errors import OnnxPruneError


def _ln_mlp(opset: int = 17) -> onnx.ModelProto:
    """x[2,8] -> MatMul(8x12) -> LayerNorm(12) -> MatMul(12x4) -> y: the hidden 12 carry the LayerNorm."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 12)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(12).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(12).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.standard_normal((12, 4)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["n"], name="ln", axis=-1),
        helper.make_node("MatMul", ["n", "w2"], ["y"], name="fc2"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_layernorm_blocks_by_default_and_says_why() -> None:
    dg = analyse(_ln_mlp())
    g = next(g for g in dg.groups if g.sources == ["fc1"])
    assert not g.prunable
    assert any("LayerNorm" in r and "--approximate layernorm" in r for r in g.blocked)


def test_layernorm_opt_in_prunes_and_is_marked_approximate() -> None:
    dg = analyse(_ln_mlp(), approximate=["layernorm"])
    g = next(g for g in dg.groups if g.sources == ["fc1"])
    assert g.prunable and g.approximate
    result = prune(dg.model, ratio=0.5, verify=True, dg=dg)
    onnx.checker.check_model(result.model)
    onnx.shape_inference.infer_shapes(result.model, strict_mode=True)
    dims = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    assert dims["w1"] == (8, 6) and dims["gamma"] == (6,) and dims["beta"] == (6,) and dims["w2"] == (6, 4)
    assert result.verify is not None and result.verify.ok  # verified nothing it cannot prove
    assert result.verify.unproven == 6 and "exact groups only: 6 removed slots" in result.verify.describe()
    assert result.fidelity is not None and result.fidelity.min_cosine < 1.0


def test_unknown_approximate_kind_is_refused() -> None:
    with pytest.raises(OnnxPruneError, match="unknown --approximate"):
        analyse(_ln_mlp(), approximate=["softmax"])
