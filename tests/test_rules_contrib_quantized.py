"""Quantized ONNX Runtime ops (com.microsoft MatMulNBits, QAttention, ...) are refused with the reason:
the channels that reach them and the channels they make are blocked, and `inspect` names the op."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from graphs import Graph, group_of, reasons

from onnxprune.api import analyse, prune
from onnxprune.errors import EXIT_NOTHING_PRUNABLE, NothingToPruneError
from onnxprune.graph.rules.contrib_quantized import REASON

MS = "com.microsoft"


def int4_mlp(op: str = "MatMulNBits") -> onnx.ModelProto:
    """x -> a (16 -> 16) -> a quantized layer (16 -> 8) -> relu -> b (8 -> 4)."""
    g = Graph(opset=17)
    x = g.input("x", (2, 5, 16))
    h = g.matmul(x, 16, 16, name="a")
    rng = np.random.default_rng(0)
    if op == "MatMulNBits":  # 4-bit blocks of 16 along K
        packed = g.const("q.B", rng.integers(0, 255, (8, 1, 8), dtype=np.uint8))
        h = g.node(op, [h, packed, g.rand("q.scales", (8, 1), low=0.01, scale=0.02)], name="q", domain=MS,
                   K=16, N=8, bits=4, block_size=16)
    else:  # DynamicQuantizeMatMul: int8 weight [K, N], one scale
        h = g.node(op, [h, g.const("q.B", rng.integers(-127, 127, (16, 8), dtype=np.int8)),
                        g.const("q.scale", np.array([0.01], np.float32))], name="q", domain=MS)
    g.output(g.matmul(g.relu(h), 8, 4, name="b"))
    return g.build()


@pytest.mark.parametrize("op", ["MatMulNBits", "DynamicQuantizeMatMul"])
def test_quantized_layer_blocks_what_reaches_it_and_what_it_makes(op: str) -> None:
    model = int4_mlp(op)
    dg = analyse(model)
    assert f"{op} 'q': {REASON}" in reasons(dg, "a")
    assert not group_of(dg, "q").prunable and group_of(dg, "q").size == 8
    assert f"{op} 'q': {REASON}" in reasons(dg, "q")
    with pytest.raises(NothingToPruneError):
        prune(model, ratio=0.5)


def test_inspect_names_the_quantized_op_and_prune_exits_3(tmp_path: Path) -> None:
    src = tmp_path / "int4.onnx"
    onnx.save(int4_mlp(), str(src))
    code, out, err = invoke("inspect", "--json", str(src))
    assert code == 0, err
    blocked = [r for g in json.loads(out)["groups"] for r in g["blocked"]]
    assert f"MatMulNBits 'q': {REASON}" in blocked
    code, out, err = invoke("prune", str(src), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5", "--round-to", "1")
    assert code == EXIT_NOTHING_PRUNABLE
    assert "nothing prunable" in one_line_error(err)
    assert not (tmp_path / "out.onnx").exists()
