"""Recurrent rules: LSTM/GRU/RNN consume the channels of their input sequence (W sliced along I)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, checked_prune, exercise, group_of, init, plan_removing, reasons

from onnxprune.api import analyse

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
HIDDEN = 6


def conv1d_rnn(op: str, *, bidirectional: bool = False, opset: int = 14) -> onnx.ModelProto:
    """Conv1d (1, 8, T) -> Transpose to (T, 1, 8) -> op -> outputs Y and Y_h.

    (layout=1, batch-first, is not covered: ONNX Runtime's CPU kernels reject it.)
    """
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 7))
    y = g.relu(g.conv(x, 4, 8, rank=1, name="c1"))
    y = g.node("Transpose", [y], name="seq", perm=[2, 0, 1])
    dirs = 2 if bidirectional else 1
    gates = GATES[op]
    w = g.rand("rnn.w", (dirs, gates * HIDDEN, 8), scale=0.3)
    r = g.rand("rnn.r", (dirs, gates * HIDDEN, HIDDEN), scale=0.3)
    b = g.rand("rnn.b", (dirs, 2 * gates * HIDDEN), scale=0.1)
    attrs: dict[str, object] = {"hidden_size": HIDDEN}
    if bidirectional:
        attrs["direction"] = "bidirectional"
    outs = g.node_multi(op, [y, w, r, b], name="rnn", n_out=2, attrs=attrs)
    for o in outs:
        g.output(o)
    return g.build()


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_consumes_conv1d_channels(op: str, bidirectional: bool) -> None:
    model = conv1d_rnn(op, bidirectional=bidirectional)
    dg = analyse(model)
    grp = group_of(dg, "c1")
    assert grp.prunable and grp.size == 8
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 6]}))
    keep = [1, 2, 3, 4, 5, 7]
    np.testing.assert_array_equal(init(r.model, "rnn.w"), init(model, "rnn.w")[:, :, keep])
    np.testing.assert_array_equal(init(r.model, "rnn.r"), init(model, "rnn.r"))
    exercise(model)


def test_channels_on_batch_axis_block() -> None:
    """The conv output fed as (seq=1, batch=8, input=T): the channels sit on the batch axis."""
    g = Graph(opset=14)
    x = g.input("x", (1, 4, 7))
    y = g.relu(g.conv(x, 4, 8, rank=1, name="c1"))
    w = g.rand("w", (1, 4 * HIDDEN, 7))
    r = g.rand("r", (1, 4 * HIDDEN, HIDDEN))
    outs = g.node_multi("LSTM", [y, w, r], name="rnn", n_out=1, hidden_size=HIDDEN)
    g.output(outs[0])
    dg = analyse(g.build())
    assert "channels on the sequence or batch axis of a recurrent layer" in reasons(dg, "c1")


def test_rnn_weight_from_graph_input_blocks() -> None:
    g = Graph(opset=14)
    x = g.input("x", (1, 4, 7))
    y = g.node("Transpose", [g.relu(g.conv(x, 4, 8, rank=1, name="c1"))], name="seq", perm=[2, 0, 1])
    w = g.input("w", (1, 3 * HIDDEN, 8))
    r = g.rand("r", (1, 3 * HIDDEN, HIDDEN))
    g.output(g.node("GRU", [y, w, r], name="rnn", hidden_size=HIDDEN))
    dg = analyse(g.build())
    assert "recurrent layer with run-time weights" in reasons(dg, "c1")


def test_lstm_outputs_carry_no_channels() -> None:
    """Y of the LSTM feeds a MatMul: the hidden size is not a group; the conv still is."""
    g = Graph(opset=14)
    x = g.input("x", (1, 4, 7))
    y = g.node("Transpose", [g.relu(g.conv(x, 4, 8, rank=1, name="c1"))], name="seq", perm=[2, 0, 1])
    w = g.rand("w", (1, 4 * HIDDEN, 8))
    r = g.rand("r", (1, 4 * HIDDEN, HIDDEN))
    h = g.node("LSTM", [y, w, r], name="rnn", hidden_size=HIDDEN)  # (T, 1, 1, H)
    h = g.node("Squeeze", [h, g.ints("ax", [1])], name="sq")
    g.output(g.matmul(h, HIDDEN, 3, name="cls"))
    model = g.build()
    dg = analyse(model)
    assert [grp.sources for grp in dg.groups] == [["c1"], ["cls"]]
    exercise(model)
