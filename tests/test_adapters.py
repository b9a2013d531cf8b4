"""onnxprune as a pass elsewhere: onnx-ir's PassManager, and a real plugin of our own entry-point group."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.calib.source import CalibConfig
from onnxprune.deploy.qdq import int8_layers
from onnxprune.errors import OnnxPruneError
from onnxprune.io.runtime import run
from onnxprune.passes.base import ENTRY_POINT_GROUP, plugin_passes
from onnxprune.sparsity.layout import is_nm_compliant

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits"
CALIB = CalibConfig(path=DIGITS / "calib.npz", samples=64)


def accuracy(model: onnx.ModelProto) -> float:
    test = np.load(DIGITS / "test.npz")
    return float((run(model, {"input": test["x"]})["logits"].argmax(1) == test["y"]).mean())


def test_onnx_ir_pass_manager_chains_our_steps_with_its_own_passes() -> None:
    ir = pytest.importorskip("onnx_ir", reason="onnx-ir is not installed (pip install 'onnxprune[onnx-ir]')")
    import onnx_ir.passes.common as common

    from onnxprune.adapters.onnx_ir import prune_pass, quantize_pass, sparsify_pass

    model = ir.serde.deserialize_model(onnx.load(str(DIGITS / "digits_resnet.onnx")))
    # The quick path: this test is about chaining passes; the quality recipe has its own tests.
    steps = [prune_pass(target_macs=0.5, round_to=8, calibration=CALIB, reconstruct=True, recipe="fast"),
             sparsify_pass(pattern=(2, 4), refit=False), quantize_pass(calibration=CALIB, target="tensorrt")]
    manager = ir.passes.PassManager([common.RemoveUnusedNodesPass(), *steps,
                                     common.TopologicalSortPass(), common.CheckerPass()])
    result = manager(model)
    assert result.modified
    out = ir.serde.serialize_model(result.model)
    assert len(int8_layers(out)) == 14
    assert "removed" in steps[0].notes[0] and "2:4 kept on all" in steps[2].notes[0]
    kept = [w for w in out.graph.initializer if w.name.endswith("_quantized") and len(w.dims) == 4 and w.dims[1] > 1]
    assert kept and all(is_nm_compliant(onnx.numpy_helper.to_array(w), 1, 2, 4) for w in kept)
    assert accuracy(out) >= 0.85  # 0.908 measured (no sparsity re-fit here, to keep the test short)
    assert len(ir.serde.serialize_model(model).graph.node) == 32  # functional: the input ir.Model is untouched


PLUGIN = textwrap.dedent('''
    import onnx
    from onnxprune.passes.base import Pass, PassResult

    class StampPass(Pass):
        """Writes a metadata entry: proof that the pass ran on the pruned model."""
        name = "stamp"

        def call(self, model: onnx.ModelProto) -> PassResult:
            out = onnx.ModelProto()
            out.CopyFrom(model)
            out.metadata_props.add(key="stamped_nodes", value=str(len(out.graph.node)))
            return PassResult(out, True, ["stamped"])

    NOT_A_PASS = 42
''')


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution found by importlib.metadata on sys.path: a dist-info folder with entry_points.txt."""
    (tmp_path / "onnxprune_stamp_plugin.py").write_text(PLUGIN)
    info = tmp_path / "onnxprune_stamp_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxprune-stamp-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nstamp = onnxprune_stamp_plugin:StampPass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield info
    sys.modules.pop("onnxprune_stamp_plugin", None)


def test_a_plugin_of_the_entry_point_group_runs_in_the_prune_path(plugin_dist: Path) -> None:
    found = plugin_passes()
    assert found["stamp"].__name__ == "StampPass"
    model = onnx.load(str(ROOT / "models" / "zoo" / "resnet_ts.onnx"))
    res = prune(model, ratio=0.3, extra_passes=["stamp"])
    assert {p.key: p.value for p in res.model.metadata_props}["stamped_nodes"] == str(len(res.model.graph.node))
    assert "stamp: stamped" in res.notes
    with pytest.raises(OnnxPruneError, match=r"no pass named 'nope' in the onnxprune.passes entry-point group \(.*stamp"):
        prune(model, ratio=0.3, extra_passes=["nope"])


def test_a_plugin_that_is_not_a_pass_is_refused(plugin_dist: Path) -> None:
    (plugin_dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbad = onnxprune_stamp_plugin:NOT_A_PASS\n")
    with pytest.raises(OnnxPruneError, match="entry point 'bad' in onnxprune.passes is not a Pass subclass"):
        plugin_passes()
