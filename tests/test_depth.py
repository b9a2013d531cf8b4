"""Depth: residual blocks found, scored by block influence, dropped (identity or mean fill), re-fitted
after, recorded in plans; the oracle covers the width part only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from graphs import Graph, init

from onnxprune.api import analyse, prune
from onnxprune.calib.collect import stream_tensors
from onnxprune.errors import EXIT_USAGE, InternalError, OnnxPruneError
from onnxprune.graph.blocks import find_blocks
from onnxprune.io.runtime import run, session
from onnxprune.measure.model_stats import model_stats
from onnxprune.passes.drop_blocks import DropBlocks, changed_tensors
from onnxprune.planning.depth import DepthPlan, lowest_blocks
from onnxprune.planning.plan import Plan
from onnxprune.recovery.layers import plan_layers
from onnxprune.scoring.block_influence import block_stats

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "models" / "zoo" / "resnet_ts.onnx"
LM = ROOT / "models" / "transformers" / "lm_llama.onnx"


def residual_mlp(*, blocks: int = 2, width: int = 8) -> onnx.ModelProto:
    """x -> [h + W2·relu(W1·h)] × blocks -> head MatMul -> y (pre-activation residual MLP)."""
    g = Graph()
    h = g.input("x", (4, width))
    for i in range(blocks):
        f = g.matmul(g.relu(g.matmul(h, width, 2 * width, name=f"b{i}_up")), 2 * width, width, name=f"b{i}_down")
        h = g.node("Add", [h, f], name=f"add{i}")
    g.output(g.matmul(h, width, 3, name="head"))
    return g.build()


def feeds(n: int = 3, *, width: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((4, width)).astype(np.float32)} for _ in range(n)]


def test_blocks_found_on_a_residual_mlp_with_their_interior() -> None:
    blocks = find_blocks(residual_mlp())
    assert [b.name for b in blocks] == ["add0", "add1"]
    b = blocks[0]
    assert (b.fork, b.branch, b.output) == ("x", "b0_down", "add0")
    assert b.nodes == ("b0_up", "relu1", "b0_down") and b.layers == ("b0_up", "b0_down")
    assert b.channel_axis == -1


def test_a_projection_shortcut_or_a_branch_read_outside_is_not_a_block() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    proj = g.conv(x, 4, 4, k=1, name="proj")
    branch = g.conv(g.relu(g.conv(x, 4, 4, name="c1")), 4, 4, name="c2")
    y = g.node("Add", [proj, branch], name="add_proj")  # neither operand is the other's input
    inner = g.conv(y, 4, 4, name="c3")
    z = g.node("Add", [y, inner], name="add_leak")
    g.output(z)
    g.output(inner)  # the branch's output is also a graph output: dropping it would remove an output
    assert find_blocks(g.build()) == []


def test_conv_blocks_found_in_the_zoo_resnet() -> None:
    blocks = find_blocks(onnx.load(str(RESNET)))
    assert len(blocks) >= 2 and all(b.channel_axis == 1 for b in blocks)
    assert all(any(n.endswith("Conv") for n in b.layers) for b in blocks)


def test_transformer_layers_give_two_blocks_each() -> None:
    blocks = find_blocks(onnx.load(str(LM)))
    assert len(blocks) == 8  # 4 decoder layers: attention and MLP
    assert sum("self_attn/q_proj" in " ".join(b.layers) for b in blocks) == 4
    assert sum("mlp/down_proj" in " ".join(b.layers) for b in blocks) == 4


def _numpy_forward(model: onnx.ModelProto, x: np.ndarray, *, skip: dict[int, np.ndarray | None]) -> np.ndarray:
    """The residual MLP in numpy; block i in `skip` adds its constant (None: nothing) instead of its branch."""
    h = x.astype(np.float64)
    for i in range(2):
        if i in skip:
            c = skip[i]
            h = h if c is None else h + c
        else:
            h = h + np.maximum(h @ init(model, f"b{i}_up.w"), 0) @ init(model, f"b{i}_down.w")
    return h @ init(model, "head.w")


def test_identity_fill_equals_the_graph_without_the_branch_exactly() -> None:
    model = residual_mlp()
    blocks = find_blocks(model)
    dropped = DropBlocks([blocks[0]], fills={"add0": None})(model).model
    onnx.checker.check_model(dropped, full_check=True)
    assert not {"b0_up", "b0_down", "add0"} & {n.name for n in dropped.graph.node}
    assert "b0_up.w" not in {t.name for t in dropped.graph.initializer}
    for feed in feeds():
        got = run(session(dropped), feed)["head"]
        # The same graph built without block 0 gives bit-identical outputs.
        want = run(session(residual_mlp_without_block0(model)), feed)["head"]
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got, _numpy_forward(model, feed["x"], skip={0: None}), rtol=1e-4, atol=1e-5)


def residual_mlp_without_block0(model: onnx.ModelProto) -> onnx.ModelProto:
    """The residual MLP's graph with block 0's nodes deleted and add1 reading x (same weights)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [n for n in m.graph.node if n.name not in ("b0_up", "relu1", "b0_down", "add0")]
    for n in keep:
        n.input[:] = ["x" if t == "add0" else t for t in n.input]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    return m


def test_mean_fill_adds_the_branch_calibration_mean() -> None:
    model = residual_mlp()
    blocks = find_blocks(model)
    stats = block_stats(model, blocks, feeds())
    branch = np.concatenate([v["b1_down"] for v in stream_tensors(model, ["b1_down"], feeds())])
    np.testing.assert_allclose(stats.means["add1"], branch.mean(0, keepdims=True), rtol=1e-5, atol=1e-6)
    assert stats.means["add1"].shape == (1, 8)
    dropped = DropBlocks([blocks[1]], fills={"add1": stats.means["add1"]})(model).model
    for feed in feeds(2):
        got = run(session(dropped), feed)["head"]
        np.testing.assert_allclose(got, _numpy_forward(model, feed["x"], skip={1: stats.means["add1"]}),
                                   rtol=1e-4, atol=1e-5)


def test_block_influence_is_one_minus_the_cosine_of_input_and_output() -> None:
    model = residual_mlp()
    blocks = find_blocks(model)
    stats = block_stats(model, blocks, feeds())
    vals = list(stream_tensors(model, ["x", "add0"], feeds()))
    x = np.concatenate([v["x"] for v in vals]).astype(np.float64)
    y = np.concatenate([v["add0"] for v in vals]).astype(np.float64)
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert stats.influence["add0"] == pytest.approx(1 - cos.mean(), rel=1e-6)
    assert stats.positions == 12


def test_lowest_blocks_skips_a_block_inside_a_chosen_one() -> None:
    g = Graph()
    x = g.input("x", (2, 4))
    inner = g.node("Add", [x, g.matmul(x, 4, 4, name="m1")], name="inner")
    outer = g.node("Add", [x, g.matmul(inner, 4, 4, name="m2")], name="outer")
    g.output(outer)
    blocks = find_blocks(g.build())
    assert [b.name for b in blocks] == ["inner", "outer"] and blocks[0].overlaps(blocks[1])
    chosen = lowest_blocks(blocks, {"inner": 0.5, "outer": 0.1}, 2)
    assert [b.name for b in chosen] == ["outer"]
    with pytest.raises(InternalError):
        DropBlocks(blocks, fills={})
    with pytest.raises(OnnxPruneError, match="inside another"):  # a hand-edited plan is bad input
        DepthPlan(["inner", "outer"]).resolve(blocks)


def test_the_layer_after_a_dropped_block_is_refitted() -> None:
    model = residual_mlp()
    dg = analyse(model)
    block = find_blocks(dg.model)[0]
    dropped = DropBlocks([block], fills={block.name: None})(dg.model).model
    changed = changed_tensors([block], {block.name: None})
    assert changed == ["x"]
    layers, _ = plan_layers(dropped, dg, set(), propagate=False, changed=changed)
    # b1_up reads x now where it read add0; head reads it through add1 (no weight between): both direct.
    # b1_down sits behind b1_up, a re-fitted layer: not direct.
    assert {x.node for x in layers if x.direct} == {"b1_up", "head"}
    none, _ = plan_layers(dropped, dg, set(), propagate=False)
    assert none == []


def test_plan_records_depth_and_refuses_a_bad_one(tmp_path: Path) -> None:
    plan = Plan(depth=DepthPlan(["add1"], "identity", "bi"))
    plan.save(tmp_path / "p.json")
    back = Plan.load(tmp_path / "p.json")
    assert back.depth == plan.depth
    assert json.loads((tmp_path / "p.json").read_text())["depth"]["approximate"] is True
    (tmp_path / "bad.json").write_text(json.dumps({"groups": [], "depth": {"blocks": ["a"], "fill": "zero"}}))
    with pytest.raises(OnnxPruneError, match="not a valid plan"):
        Plan.load(tmp_path / "bad.json")
    with pytest.raises(OnnxPruneError, match="not a removable residual block"):
        prune(residual_mlp(), plan=Plan(depth=DepthPlan(["head"])))


def test_depth_alone_on_a_residual_mlp_replays_from_its_plan(tmp_path: Path) -> None:
    model = residual_mlp()
    r = prune(model, ratio=0.0, drop_blocks=1, block_fill="identity", calibration=feeds(), reconstruct=False,
              verify=True)
    assert r.plan.depth is not None and len(r.plan.depth.blocks) == 1
    assert r.verify is None and "approximate" in (r.verify_line() or "")
    assert r.depth is not None and set(r.depth.influence) == {"add0", "add1"}
    gone = r.plan.depth.blocks[0]
    assert r.depth.influence[gone] == min(r.depth.influence.values())
    r.plan.save(tmp_path / "p.json")
    again = prune(model, plan=Plan.load(tmp_path / "p.json"), calibration=feeds(), reconstruct=False)
    assert again.plan.depth == r.plan.depth
    for feed in feeds(1):
        np.testing.assert_array_equal(run(session(r.model), feed)["head"], run(session(again.model), feed)["head"])


def test_resnet_width_and_depth_end_to_end(tmp_path: Path) -> None:
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    code, stdout, stderr = invoke("prune", str(RESNET), "-o", str(out), "--ratio", "0.3", "--drop-blocks", "1",
                                  "--save-plan", str(plan), "--report", str(tmp_path / "r.json"), "--no-progress")
    assert code == 0, stderr
    assert "verify PASS" in stdout and "width part only" in stdout
    assert "dropped 1 of 2 residual blocks" in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verify"]["covers"] == "width" and report["depth"]["approximate"] is True
    assert len(json.loads(plan.read_text())["depth"]["blocks"]) == 1
    width_only = prune(str(RESNET), ratio=0.3)
    assert model_stats(onnx.load(str(out))).macs < model_stats(width_only.model).macs
    code, _, stderr = invoke("prune", str(RESNET), "-o", str(tmp_path / "o2.onnx"), "--plan", str(plan),
                             "--no-progress")
    assert code == 0, stderr
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({k: v for k, v in json.loads(plan.read_text()).items() if k != "depth"}))
    code, _, stderr = invoke("prune", str(RESNET), "-o", str(tmp_path / "o3.onnx"), "--plan", str(bare),
                             "--drop-blocks", "1", "--no-progress")
    assert code == EXIT_USAGE and "--drop-blocks with --plan" in one_line_error(stderr)


def test_measured_score_is_each_blocks_own_output_error() -> None:
    model = residual_mlp()
    r = prune(model, ratio=0.0, drop_blocks=1, block_fill="identity", block_score="measured", calibration=feeds(),
              reconstruct=False)
    assert r.depth is not None and r.plan.depth is not None and r.plan.depth.score == "measured"
    for name, err in r.depth.influence.items():
        alone = DropBlocks([b for b in find_blocks(model) if b.name == name], fills={name: None})(model).model
        got = np.concatenate([run(session(alone), f)["head"] for f in feeds()])
        want = np.concatenate([run(session(model), f)["head"] for f in feeds()])
        assert err == pytest.approx(np.linalg.norm(got - want) / np.linalg.norm(want), rel=1e-4)


def test_depth_options_are_checked_once() -> None:
    with pytest.raises(OnnxPruneError, match="--target-latency"):
        prune(residual_mlp(), target_latency=1.0, drop_blocks=1)
    with pytest.raises(OnnxPruneError, match="unknown block fill"):
        prune(residual_mlp(), drop_blocks=1, block_fill="zero")
    with pytest.raises(OnnxPruneError, match="--steps"):
        prune(residual_mlp(), drop_blocks=1, steps=2)


def test_a_mac_budget_counts_the_dropped_blocks() -> None:
    r = prune(str(RESNET), target_macs=0.5, drop_blocks=1, round_to=1, time_multiples=False)
    assert r.target is not None and r.target.ok and r.plan.depth is not None
    kept = model_stats(r.model).macs / model_stats(onnx.load(str(RESNET))).macs
    assert abs(kept - 0.5) <= 0.03 * 0.5 and kept == pytest.approx(r.target.achieved, rel=1e-3)
    width_only = prune(str(RESNET), target_macs=0.5, round_to=1, time_multiples=False)
    assert r.removed_slots < width_only.removed_slots  # the blocks paid for part of the budget


def test_auto_splits_a_budget_between_depth_and_width_by_measured_error() -> None:
    model = residual_mlp(blocks=3, width=16)
    cal = feeds(4, width=16)
    r = prune(model, target_params=0.6, drop_blocks="auto", round_to=1, time_multiples=False, calibration=cal,
              reconstruct=False)
    note = next(n for n in r.notes if n.startswith("depth auto"))
    tried = note.split("tried ")[1].split("; ")
    assert tried[0].startswith("0 blocks: error") and len(tried) >= 2
    errors = {int(t.split(" ")[0]): float(t.split("error ")[1].split(" ")[0]) for t in tried if "error" in t}
    k = len(r.plan.depth.blocks) if r.plan.depth is not None else 0
    assert errors[k] == min(errors.values())  # the split kept is the one measured closest
    kept = model_stats(r.model).params / model_stats(model).params
    assert abs(kept - 0.6) <= 0.03 * 0.6


def test_auto_needs_a_mac_or_parameter_budget() -> None:
    with pytest.raises(OnnxPruneError, match="auto needs a --target-macs or --target-params"):
        prune(residual_mlp(), ratio=0.3, drop_blocks="auto")
    code, _, stderr = invoke("prune", str(RESNET), "-o", "/nonexistent/o.onnx", "--drop-blocks", "some")
    assert code == EXIT_USAGE and "not a count" in stderr


def test_inspect_lists_the_residual_blocks() -> None:
    code, stdout, stderr = invoke("inspect", str(RESNET), "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["summary"]["residual_blocks"] == len(data["blocks"]) == 2
    assert data["blocks"][0]["name"] == "/layer1/layer1.0/Add" and len(data["blocks"][0]["layers"]) == 2
