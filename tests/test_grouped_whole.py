"""`grouped="whole"` (`--grouped-conv whole`): grouped convolutions lose whole groups (rules/conv.py);
`grouped="auto"` (the default) does so where a group holds fewer than 16 channels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from graphs import Graph, attr, node_const

from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError

ROOT = Path(__file__).resolve().parent.parent


def _block(groups: int = 4, per_group: int = 4) -> onnx.ModelProto:
    """conv c1 (8 -> C) -> relu -> grouped conv gc (C -> C, `groups`) -> relu -> conv c3 (C -> 8)."""
    c = groups * per_group
    g = Graph(opset=17, seed=3)
    x = g.input("x", (1, 8, 6, 6))
    h = g.relu(g.conv(x, 8, c, name="c1"))
    h = g.relu(g.conv(h, c, c, group=groups, name="gc"))
    g.output(g.conv(h, c, 8, name="c3"))
    return g.build()


def _conv(model: onnx.ModelProto, name: str) -> tuple[list[int], int]:
    """(weight shape, group attribute) of a Conv."""
    group = attr(model, name, "group")
    return list(node_const(model, name, 1).shape), 1 if group is None else int(group)  # type: ignore[call-overload]


@pytest.mark.parametrize("per_group", [2, 4])
def test_whole_groups_leave_with_their_inputs(per_group: int) -> None:
    model = _block(4, per_group)
    dg = analyse(model, grouped="whole")
    group = next(g for g in dg.groups if "gc" in g.sources)
    assert group.prunable and group.size == 4 and "c1" in group.sources  # one slot per conv group
    res = prune(model, dg=dg, ratio=0.5, verify=True)
    assert res.verify is not None and res.verify.ok  # the oracle: equal to the original with those channels dead
    assert _conv(res.model, "gc") == ([2 * per_group, per_group, 3, 3], 2)  # channels per group kept, 2 groups
    assert _conv(res.model, "c1")[0][0] == 2 * per_group and _conv(res.model, "c3")[0][1] == 2 * per_group
    x = np.random.default_rng(0).random((1, 8, 6, 6), dtype=np.float32)
    sess = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": x})[0].shape == (1, 8, 6, 6)


def test_index_mode_removes_the_same_index_in_every_group() -> None:
    res = prune(_block(4, 4), ratio=0.5, verify=True, grouped="index")
    assert _conv(res.model, "gc") == ([8, 2, 3, 3], 4)  # 4 groups of 2: the same index left every group


@pytest.mark.parametrize("groups, per_group, gc_shape", [(4, 4, ([8, 4, 3, 3], 2)),  # narrow: whole groups
                                                         (2, 16, ([16, 8, 3, 3], 2))])  # wide: the same index
def test_auto_is_the_default_and_takes_whole_groups_only_where_narrow(
        groups: int, per_group: int, gc_shape: tuple[list[int], int]) -> None:
    model = _block(groups, per_group)
    dg = analyse(model)
    assert dg.analysis.grouped == "auto"
    gc = next(g for g in dg.groups if "gc" in g.sources)
    assert (gc.size, gc.width) == ((groups, per_group) if per_group < 16 else (per_group, groups))
    res = prune(model, dg=dg, ratio=0.5, verify=True)
    assert res.verify is not None and res.verify.ok
    assert _conv(res.model, "gc") == gc_shape


def test_auto_falls_back_to_index_where_whole_groups_are_blocked() -> None:
    """A grouped conv reading the graph input: whole mode blocks its outputs, auto removes the same index."""
    g = Graph(opset=17)
    x = g.input("x", (1, 8, 6, 6))
    g.output(g.conv(g.relu(g.conv(x, 8, 8, group=2, name="gc")), 8, 4, name="c2"))
    model = g.build()
    gc = next(gr for gr in analyse(model).groups if "gc" in gr.sources)
    assert gc.prunable and (gc.size, gc.width) == (4, 2)
    res = prune(model, ratio=0.5, verify=True)
    assert res.verify is not None and res.verify.ok and _conv(res.model, "gc") == ([4, 4, 3, 3], 2)


def test_index_slots_keep_whole_blocks_in_every_group() -> None:
    """2 conv groups of 16: an index slot is one channel of each group, so at --round-to 8 every group keeps
    a multiple of 8 channels (ONNX Runtime's NCHWc kernels take a grouped conv only then); counting channels
    alone would keep multiples of 4 slots, e.g. 12 per group."""
    model = _block(2, 16)
    dg = analyse(model, grouped="index")
    gc = next(g for g in dg.groups if "gc" in g.sources)
    assert gc.strided and (gc.size, gc.width) == (16, 2) and gc.multiple(8) == 8
    res = prune(model, dg=dg, ratio=0.25, round_to=8, verify=True)
    assert res.verify is not None and res.verify.ok
    # A quarter of one group is half a block of 8 slots, but a quarter of all 64 prunable channels is
    # one block (8 slots × 2 channels): one of the two groups (c1's input side of gc, or gc's output)
    # gives it, the other stays whole; either way each conv group keeps a multiple of 8 channels.
    assert res.channels == (16, 64) and sorted(len(v) for v in res.plan.removals.values()) == [8]
    w, group = _conv(res.model, "gc")
    assert group == 2 and (w[0], w[1]) in ((32, 8), (16, 16))
    half = prune(model, dg=dg, ratio=0.5, round_to=8, verify=True)
    assert half.verify is not None and half.verify.ok and _conv(half.model, "gc") == ([16, 8, 3, 3], 2)
    whole = next(g for g in analyse(model, grouped="whole").groups if "gc" in g.sources)
    assert not whole.strided and whole.multiple(8) == 1  # a whole group is 16 channels side by side


def test_grouped_conv_on_the_graph_input_is_blocked_in_whole_mode() -> None:
    g = Graph(opset=17)
    x = g.input("x", (1, 8, 6, 6))
    g.output(g.conv(g.relu(g.conv(x, 8, 8, group=2, name="gc")), 8, 4, name="c2"))
    dg = analyse(g.build(), grouped="whole")
    gc = next(gr for gr in dg.groups if "gc" in gr.sources)
    assert not gc.prunable and "input channels" in gc.blocked[0]


def test_bad_mode_and_cli(tmp_path: Path) -> None:
    with pytest.raises(OnnxPruneError, match="grouped-conv mode"):
        analyse(_block(), grouped="rows")
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(_block(4, 4), str(src))
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--grouped-conv", "whole", "--ratio", "0.5",
                                  "--round-to", "1", "--verify", "--no-progress", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.stderr
    assert _conv(onnx.load(str(out)), "gc") == ([8, 4, 3, 3], 2)
    decided = next(g for g in json.loads((tmp_path / "r.json").read_text())["groups"] if "gc" in g["sources"])
    assert {k: decided[k] for k in ("channels", "slots", "channels_per_slot", "removed", "kept")} == {
        "channels": 16, "slots": 4, "channels_per_slot": 4, "removed": 8, "kept": 8}  # 2 of 4 conv groups
    r = CliRunner().invoke(main, ["inspect", str(src), "--grouped-conv", "whole", "--json"])
    data = json.loads(r.stdout)
    gc = next(g for g in data["groups"] if "gc" in g["sources"])
    assert (gc["channels"], gc["slots"], gc["channels_per_slot"]) == (16, 4, 4)
    summary = data["summary"]
    assert summary["prunable_slots"] == 4 and summary["prunable_channels"] == 16  # one group of 4 conv groups x 4
    assert summary["grouped_conv"] == "whole" and summary["whole_group_convs"] == ["gc"]
    r = CliRunner().invoke(main, ["inspect", str(src), "--grouped-conv", "whole"])
    assert r.exit_code == 0 and "16 (4 slots × 4)" in r.stdout and "1 grouped conv(s) lose whole groups" in r.stdout


@pytest.mark.skipif(not (ROOT / "models" / "zoo" / "resnext_ts.onnx").exists(), reason="zoo not built")
@pytest.mark.parametrize("round_to", [1, 8])
@pytest.mark.parametrize("grouped", ["whole", "index", "auto"])
@pytest.mark.parametrize("name", ["resnext_ts", "resnext_dynamo"])
def test_zoo_resnext_budget_matches_the_oracle(name: str, grouped: str, round_to: int) -> None:
    path = ROOT / "models" / "zoo" / f"{name}.onnx"
    dg = analyse(path, grouped=grouped)
    res = prune(path, dg=dg, target_macs=0.5, round_to=round_to, verify=True)
    assert res.verify is not None and res.verify.ok and res.target is not None and res.target.ok
    for conv in (n.name for n in res.model.graph.node if n.op_type == "Conv"):  # kept channels stay multiples
        (shape, group), before = _conv(res.model, conv), _conv(dg.model, conv)[0]
        if group == 1 and shape[1] > 3 and round_to > 1:
            assert shape[1] % round_to == 0 or shape[1] == before[1], (conv, shape)


@pytest.mark.parametrize("grouped, slots_kept, gc_shape", [("whole", 4, ([16, 4, 3, 3], 4)),
                                                            ("index", 2, ([16, 2, 3, 3], 8))])
def test_round_to_counts_channels_not_slots(grouped: str, slots_kept: int, gc_shape: tuple[list[int], int]) -> None:
    """8 conv groups of 4 channels. A slot holds 4 channels (whole: one conv group; index: the same
    index in 8 groups = 8 channels), so --round-to 8 keeps multiples of 2 (whole) or 1 (index) slots:
    before, slots had to be multiples of 8 and neither group could shrink at all."""
    model = _block(8, 4)
    dg = analyse(model, grouped=grouped)
    g = next(gr for gr in dg.groups if "gc" in gr.sources)
    assert (g.size, g.width) == ((8, 4) if grouped == "whole" else (4, 8))
    assert g.multiple(8) == (2 if grouped == "whole" else 1)
    res = prune(model, dg=dg, ratio=0.5, round_to=8, verify=True)
    assert res.verify is not None and res.verify.ok
    assert _conv(res.model, "gc") == gc_shape
    assert _conv(res.model, "c1")[0][0] % 8 == 0 and _conv(res.model, "c1")[0][0] == slots_kept * g.width


def test_sensitivity_file_counts_slots_and_channels(tmp_path: Path) -> None:
    """Curves of a whole-group conv name both units, prune takes them, and files from before the
    "slots" key (where "channels" held the slot count) still load."""
    src, curves = tmp_path / "m.onnx", tmp_path / "s.json"
    onnx.save(_block(4, 4), str(src))
    base = ["--grouped-conv", "whole", "--round-to", "1"]
    r = CliRunner().invoke(main, ["sensitivity", str(src), "--ratios", "0.25,0.5,0.75", "--samples", "4",
                                  "--json", str(curves), *base])
    assert r.exit_code == 0, r.stderr
    data = json.loads(curves.read_text())
    gc = next(g for g in data["groups"] if "gc" in g["sources"])
    assert (gc["slots"], gc["channels"], gc["channels_per_slot"]) == (4, 16, 4)
    assert [p["removed"] for p in gc["points"]] == [1, 2, 3]  # slots: whole conv groups
    for g in data["groups"]:  # the format before: "channels" was the slot count
        g["channels"] = g.pop("slots")
        del g["channels_per_slot"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    for path in (curves, old):
        out = tmp_path / f"o_{path.stem}.onnx"
        r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--sensitivity", str(path),
                                      "--target-macs", "0.6", "--verify", "--no-progress", *base])
        assert r.exit_code == 0, r.stderr
    assert onnx.load(str(tmp_path / "o_s.onnx")).graph == onnx.load(str(tmp_path / "o_old.onnx")).graph
