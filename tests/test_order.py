"""Removal order in blocks per Split piece: every consumer keeps a width that is a multiple of round_to."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, get_node, group_of, init, set_init

from onnxprune.api import analyse, prune
from onnxprune.measure.curves import sensitivity_curves
from onnxprune.planning.order import block_size, group_pieces, removal_order, removal_orders
from onnxprune.scoring.catalog import score_groups


def c2f() -> onnx.ModelProto:
    """YOLOv8's C2f in small: cv1 (16 ch) split in halves, a conv on the second half, concat, cv2.
    cv1's channels 0-5 and 8-9 are the weakest, so a plain lowest-first removal of 8 takes 6 from
    the first half and 2 from the second."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 16, name="cv1"))
    a, b = g.node_multi("Split", [y, g.ints("sizes", [8, 8])], name="split", n_out=2, attrs={"axis": 1})
    m = g.relu(g.conv(b, 8, 8, name="m"))
    g.output(g.conv(g.node("Concat", [a, b, m], name="cat", axis=1), 24, 4, name="cv2"))
    model = g.build()
    weak = np.array([0, 1, 2, 3, 4, 5, 8, 9])
    for name, axis in (("cv1.w", 0), ("cv2.w", 1)):
        set_init(model, name, lambda w, axis=axis: _scaled(w, axis, weak))
    set_init(model, "m.w", lambda w: _scaled(w, 1, weak[6:] - 8))
    return model


def _scaled(w: np.ndarray, axis: int, idx: np.ndarray) -> np.ndarray:
    w = np.moveaxis(w, axis, 0).copy()
    w[idx] *= 1e-2
    return np.moveaxis(w, 0, axis)


def halves(removed: list[int]) -> tuple[int, int]:
    return sum(i < 8 for i in removed), sum(i >= 8 for i in removed)


def test_pieces_follow_the_consumers() -> None:
    dg = analyse(c2f())
    g = group_of(dg, "cv1")
    pieces = group_pieces(dg)[g.id]
    assert sorted(sorted(p.tolist()) for p in pieces) == [list(range(8)), list(range(8, 16))]
    assert len(group_pieces(dg)[group_of(dg, "m").id]) == 1


@pytest.mark.parametrize(("sizes", "round_to", "want"), [
    ([16, 16], 16, 8), ([32, 32], 16, 16), ([24, 24], 16, 8), ([16], 8, 8), ([3, 5], 8, 1), ([8, 8], 1, 1)])
def test_block_size(sizes: list[int], round_to: int, want: int) -> None:
    assert block_size(sizes, round_to) == want


def test_every_prefix_takes_whole_blocks_and_empties_pieces_last() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(56)
    pieces = [np.arange(0, 16), np.arange(16, 40), np.arange(40, 56)]
    order = removal_order(scores, pieces, 8)
    assert sorted(order.tolist()) == list(range(56))
    sizes = [16, 24, 16]
    for n in range(0, 56 + 1, 8):
        taken = set(order[:n].tolist())
        lost = [len(taken & set(p.tolist())) for p in pieces]
        assert all(k % 8 == 0 for k in lost), (n, lost)
        if n <= 56 - 8 * len(pieces):
            assert all(k < s for k, s in zip(lost, sizes, strict=True)), (n, lost)
        # inside a piece the lowest scores go first
        for p in pieces:
            gone = [i for i in order[:n].tolist() if i in set(p.tolist())]
            assert sorted(scores[gone].tolist()) == sorted(np.sort(scores[p])[:len(gone)].tolist())


def test_one_piece_or_round_to_one_is_the_plain_order() -> None:
    s = np.random.default_rng(0).random(16)
    plain = np.argsort(s, kind="stable")
    np.testing.assert_array_equal(removal_order(s, [np.arange(16)], 8), plain)
    np.testing.assert_array_equal(removal_order(s, [np.arange(8), np.arange(8, 16)], 1), plain)
    np.testing.assert_array_equal(removal_order(s, [], 8), plain)


def test_plain_order_would_split_unevenly() -> None:
    """The premise of the tests below: without pieces, 8 removals are 6 + 2."""
    dg = analyse(c2f())
    gid = group_of(dg, "cv1").id
    scores = score_groups(dg, "l2")
    assert halves(np.argsort(scores[gid], kind="stable")[:8].tolist()) == (6, 2)
    assert halves(removal_orders(dg, scores, round_to=4)[gid][:8].tolist()) == (4, 4)


@pytest.mark.parametrize("how", ["uniform", "global", "target-macs", "target-macs-global", "curves"])
def test_every_allocation_keeps_consumer_widths_multiples(how: str) -> None:
    model = c2f()
    opts: dict[str, object] = {
        "uniform": {"ratio": 0.5}, "global": {"ratio": 0.4, "allocation": "global"},
        "target-macs": {"target_macs": 0.5}, "target-macs-global": {"target_macs": 0.5, "allocation": "global"},
        "curves": {"target_macs": 0.5, "sensitivity": sensitivity_curves(
            analyse(model), ratios=(0.25, 0.5, 0.75), round_to=4, samples=4)},
    }[how]
    r = prune(model, round_to=4, verify=True, **opts)  # type: ignore[arg-type]
    assert r.verify is not None and r.verify.ok
    m_in = init(r.model, get_node(r.model, "m").input[1]).shape[1]
    cv1_out = init(r.model, get_node(r.model, "cv1").input[1]).shape[0]
    assert cv1_out < 16, "nothing removed from the split group"
    assert m_in % 4 == 0 and (cv1_out - m_in) % 4 == 0, (cv1_out, m_in)
