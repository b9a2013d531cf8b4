"""`prune --keep PATTERN`: layers whose output channels are never removed (onnxprune.graph.keep)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph, group_of, node_const

from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.measure.curves import sensitivity_curves


def _model() -> onnx.ModelProto:
    """conv a (3->16) -> relu -> conv b (16->16) -> relu -> conv c (16->4): groups a (16) and b (16)."""
    g = Graph(opset=17)
    x = g.input("x", (1, 3, 8, 8))
    h = g.relu(g.conv(x, 3, 16, name="stem/a"))
    h = g.relu(g.conv(h, 16, 16, name="head/b"))
    g.output(g.conv(h, 16, 4, name="head/c"))
    return g.build()


def _channels(model: onnx.ModelProto, node: str) -> int:
    return int(node_const(model, node, 1).shape[0])


def test_kept_layer_keeps_its_outputs_and_inputs_may_shrink() -> None:
    model = _model()
    dg = analyse(model)
    res = prune(model, dg=dg, ratio=0.5, keep=["head/*"], verify=True)
    assert res.verify is not None and res.verify.ok
    assert _channels(res.model, "head/b") == 16  # kept
    assert _channels(res.model, "stem/a") == 8  # pruned, so head/b reads 8 inputs
    kept = group_of(res.dg, "head/b")
    assert not kept.prunable and "matches --keep 'head/*'" in kept.blocked[-1]
    assert group_of(dg, "head/b").prunable  # the caller's graph is not changed
    assert _channels(prune(model, dg=dg, ratio=0.5).model, "head/b") == 8


def test_keep_with_a_budget_and_curves_measured_without_it() -> None:
    model = _model()
    dg = analyse(model)
    curves = sensitivity_curves(dg, ratios=(0.25, 0.5), samples=2)
    res = prune(model, dg=dg, target_macs=0.7, sensitivity=curves, keep=["stem/a"], verify=True)
    assert _channels(res.model, "stem/a") == 16 and _channels(res.model, "head/b") < 16
    assert res.target is not None


def test_a_pattern_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OnnxPruneError, match="--keep 'nothing\\*' matches no layer"):
        prune(_model(), ratio=0.5, keep=["nothing*"])
    with pytest.raises(OnnxPruneError, match="matches no layer"):  # a Relu produces no channel group
        prune(_model(), ratio=0.5, keep=["*Relu*"])
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(_model(), str(src))
    before = src.read_bytes()
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--keep", "nope", "--no-progress"])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: --keep 'nope'")
    assert not out.exists() and src.read_bytes() == before


def test_cli_keep_is_in_the_report(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(_model(), str(src))
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--ratio", "0.5", "--keep", "stem/*",
                                  "--keep", "head/b", "--report", str(rep), "--no-progress"])
    assert r.exit_code == 3 and "nothing prunable" in r.stderr  # both groups kept
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--ratio", "0.5", "--keep", "stem/*",
                                  "--report", str(rep), "--no-progress", "--round-to", "1"])
    assert r.exit_code == 0, r.stderr
    groups = json.loads(rep.read_text())["groups"]
    kept = [g for g in groups if any("--keep" in b for b in g.get("blocked", []))]
    assert len(kept) == 1 and kept[0]["removed"] == 0
    assert _channels(onnx.load(str(out)), "stem/a") == 16


def test_cli_sensitivity_keep_and_prune_with_its_curves(tmp_path: Path) -> None:
    src, js, out = tmp_path / "m.onnx", tmp_path / "s.json", tmp_path / "o.onnx"
    onnx.save(_model(), str(src))
    r = CliRunner().invoke(main, ["sensitivity", str(src), "--ratios", "0.25,0.5", "--calib-samples", "2",
                                  "--keep", "stem/a", "--json", str(js), "--no-progress", "--round-to", "1"])
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(js.read_text())["groups"]) == 1  # only head/b's group was measured
    base = ["prune", str(src), "-o", str(out), "--sensitivity", str(js), "--target-macs", "0.7", "--no-progress",
            "--round-to", "1"]
    r = CliRunner().invoke(main, base)
    assert r.exit_code == 2 and "no curve for prunable groups" in r.stderr and not out.exists()
    r = CliRunner().invoke(main, [*base, "--keep", "stem/a"])
    assert r.exit_code == 0, r.stderr
    assert _channels(onnx.load(str(out)), "stem/a") == 16 and _channels(onnx.load(str(out)), "head/b") < 16
