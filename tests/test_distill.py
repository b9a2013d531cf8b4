"""Distillation (recovery/distill.py, recovery/torch_graph.py): the PyTorch run of a graph equals ONNX
Runtime's, training lowers the error to the dense model, only initializer values change, and nothing
imports torch unless distillation runs. Tests that train skip when torch (the [distill] extra) is absent."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from graphs import Graph
from zoo import entry_ids, random_inputs, zoo_entries

from onnxprune.api import prune
from onnxprune.errors import OnnxPruneError
from onnxprune.io import runtime
from onnxprune.recovery.distill import DistillOptions, check_structure, distill, exactness

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed (pip install 'onnxprune[distill]')")
REPO = Path(__file__).resolve().parents[1]


def tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv-relu-conv-relu-GAP-flatten-gemm: two prunable conv layers feeding a classifier."""
    g = Graph(opset=17, seed=seed)
    x = g.input("x", ("batch", 3, 8, 8))
    y = g.relu(g.conv(x, 3, 16, name="c1"))
    y = g.relu(g.conv(y, 16, 16, name="c2"))
    y = g.node("Flatten", [g.node("GlobalAveragePool", [y])], axis=1)
    g.output(g.gemm(y, 16, 6, name="fc"))
    return g.build()


def calibration(n: int = 48, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def test_library_and_plain_prune_do_not_import_torch(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), model)
    code = ("import sys\nfrom click.testing import CliRunner\nfrom onnxprune.cli import main\nimport onnxprune.api\n"
            f"r = CliRunner().invoke(main, ['prune', {str(model)!r}, '-o', {str(tmp_path / 'p.onnx')!r}, "
            "'--ratio', '0.5', '--no-progress'])\n"
            "assert r.exit_code == 0, r.output\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


@needs_torch
def test_tiny_graph_runs_exactly_in_torch() -> None:
    from onnxprune.recovery.distill_targets import trainable
    from onnxprune.recovery.torch_graph import TorchGraph

    model = tiny_cnn()
    feed = calibration(1)[0]
    graph = TorchGraph(model, trainable(model))
    assert sorted(graph.names) == ["c1.b", "c1.w", "c2.b", "c2.w", "fc.b", "fc.w"]
    assert exactness(graph, model, feed) < 1e-5
    with pytest.raises(OnnxPruneError, match="differs from ONNX Runtime"):  # the check can fail
        graph.parameter("fc.b").data += 1.0
        exactness(graph, model, feed)


CNNS = [e for e in zoo_entries(("torch", "real")) if "bert" not in e.name and "t5" not in e.name]


@needs_torch
@pytest.mark.parametrize("entry", CNNS, ids=entry_ids(CNNS))
def test_zoo_pruned_models_run_exactly_or_are_refused(entry) -> None:  # type: ignore[no-untyped-def]
    from onnxprune.recovery.distill_targets import trainable
    from onnxprune.recovery.torch_graph import TorchGraph, unsupported

    pruned = prune(str(entry.path), ratio=0.3, shapes=entry.shapes).model
    bad = unsupported(pruned)
    if bad:  # refused by name before any training
        with pytest.raises(OnnxPruneError, match=f"no PyTorch rule for {bad[0]}"):
            distill(pruned, pruned, [random_inputs(entry), random_inputs(entry, seed=1)])
        return
    assert exactness(TorchGraph(pruned, trainable(pruned)), pruned, random_inputs(entry)) < 1e-4


@needs_torch
def test_distillation_lowers_the_error_and_keeps_the_structure() -> None:
    dense, cal = tiny_cnn(), calibration()
    pruned = prune(dense, ratio=0.5, calibration=cal, reconstruct=False, verify=True)
    res = distill(pruned.model, pruned.dense, cal, dg=pruned.dg, removed_roots=pruned.plan.removed_roots(pruned.dg),
                  options=DistillOptions(steps=150, lr=3e-3, batch=8, eval_every=10, patience=5))
    assert res.features == ["c1", "c2", "fc"] and res.heads == ["mse fc"]  # every pruned layer, the logits
    before, after = res.before["fc"].rel_error, res.after["fc"].rel_error
    assert res.changed and after < 0.8 * before, (before, after)
    assert res.exactness < 1e-4
    check_structure(pruned.model, res.model)  # raises if anything but initializer values changed
    old = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.model.graph.initializer}
    new = {t.name: onnx.numpy_helper.to_array(t) for t in res.model.graph.initializer}
    assert old.keys() == new.keys() and all(old[k].shape == new[k].shape for k in old)
    assert any(not np.array_equal(old[k], new[k]) for k in old)
    assert list(pruned.model.graph.node) == list(res.model.graph.node)
    feed = cal[0]
    assert runtime.run(res.model, feed)["fc"].shape == runtime.run(pruned.model, feed)["fc"].shape


def test_check_structure_fails_on_a_changed_graph() -> None:
    a, b = tiny_cnn(), tiny_cnn()
    b.graph.node[1].op_type = "Sigmoid"
    with pytest.raises(Exception, match="structure"):
        check_structure(a, b)


@needs_torch
def test_cli_prune_distill_reports_and_writes(tmp_path: Path) -> None:
    model, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(tiny_cnn(), model)
    np.savez(calib, x=np.concatenate([f["x"] for f in calibration(32)]))
    code, out, err = invoke("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--calib",
                            str(calib), "--distill", "--distill-steps", "20", "--distill-lr", "1e-3",
                            "--report", str(tmp_path / "r.json"), "--no-progress")
    assert code == 0, out + err
    assert "distill: fine-tuned" in out and "held-out output fc: before" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["distill"]["steps"] >= 1 and report["distill"]["outputs"]["fc"]["after"]["cosine"] > 0
    code, out, err = invoke("prune", str(model), "-o", str(tmp_path / "plain.onnx"), "--ratio", "0.5", "--calib",
                            str(calib), "--no-progress")
    assert code == 0, out + err
    plain, written = onnx.load(str(tmp_path / "plain.onnx")), onnx.load(str(tmp_path / "p.onnx"))
    check_structure(plain, written)  # the same pruned structure, only weights differ
    assert (plain.graph.initializer != written.graph.initializer) == (report["distill"]["best_step"] > 0)


def test_cli_distill_without_calibration_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), model)
    code, _, err = invoke("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--distill", "--no-progress")
    assert code == 2
    assert "--distill needs the user's data" in one_line_error(err)
    assert not (tmp_path / "p.onnx").exists()


@needs_torch
def test_cli_distill_refuses_an_op_without_a_torch_rule(tmp_path: Path) -> None:
    g = Graph(opset=17)
    x = g.input("x", ("batch", 3, 8, 8))
    y = g.relu(g.conv(g.node("LRN", [x], size=3), 3, 8, name="c1"))  # before the pruned layers
    g.output(g.conv(y, 8, 4, name="c2"))
    model, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(g.build(), model)
    np.savez(calib, x=np.concatenate([f["x"] for f in calibration(8)]))
    code, _, err = invoke("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--calib",
                          str(calib), "--distill", "--no-progress")
    assert code == 2
    assert "no PyTorch rule for LRN" in one_line_error(err)
    assert not (tmp_path / "p.onnx").exists()


@needs_torch
def test_when_no_step_beats_the_refit_the_model_is_the_plain_refit() -> None:
    dense, cal = tiny_cnn(), calibration()
    plain = prune(dense, ratio=0.5, calibration=cal, reconstruct=True)
    res = prune(dense, ratio=0.5, calibration=cal, reconstruct=True,
                distill=DistillOptions(steps=2, lr=10.0, eval_every=1, patience=1))  # a step this large only hurts
    assert res.distillation is not None and not res.distillation.changed and res.distillation.refit_all
    assert res.reconstruction is not None and res.reconstruction.samples == plain.reconstruction.samples  # type: ignore[union-attr]
    assert list(res.model.graph.initializer) == list(plain.model.graph.initializer)


@needs_torch
@pytest.mark.parametrize(("op", "kind"), [("Softmax", "kl"), ("Sigmoid", "bce")])
def test_probability_heads_are_taught_by_kl(op: str, kind: str) -> None:
    g = Graph(opset=17, seed=3)
    x = g.input("x", ("batch", 3, 8, 8))
    y = g.relu(g.conv(g.relu(g.conv(x, 3, 16, name="c1")), 16, 16, name="c2"))
    y = g.node("Flatten", [g.node("GlobalAveragePool", [y])], axis=1)
    g.output(g.node(op, [g.gemm(y, 16, 6, name="fc")], name="prob"))
    dense, cal = g.build(), calibration()
    pruned = prune(dense, ratio=0.5, calibration=cal, reconstruct=False)
    res = distill(pruned.model, pruned.dense, cal, options=DistillOptions(steps=120, lr=3e-3, eval_every=10, patience=5))
    assert res.heads == [f"{kind} prob"] and res.features == []  # no analysis given: outputs only
    assert res.changed and res.after["prob"].rel_error < res.before["prob"].rel_error
