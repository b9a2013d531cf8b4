"""The prune/inspect command lines: results, exit codes, one-line errors, untouched inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import EXIT_NOTHING_PRUNABLE, EXIT_USAGE

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "models" / "zoo" / "resnet_ts.onnx"


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_prune_writes_a_smaller_verified_model(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    before = _digest(RESNET)
    code, stdout, stderr = invoke("prune", str(RESNET), "-o", str(out), "--ratio", "0.5",
                                   "--report", str(tmp_path / "r.json"), "--save-plan", str(tmp_path / "p.json"))
    assert code == 0, stderr
    assert "verify PASS" in stdout
    assert _digest(RESNET) == before, "the input model must never be modified"
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verify"]["ok"] is True
    macs = next(r for r in report["compare"]["rows"] if r["metric"] == "MACs") if "rows" in report["compare"] else None
    if macs is not None:
        assert macs["after"] < macs["before"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".onnxprune-")] == []
    # The saved plan replays to the same model.
    out2 = tmp_path / "out2.onnx"
    code, _, stderr = invoke("prune", str(RESNET), "-o", str(out2), "--plan", str(tmp_path / "p.json"))
    assert code == 0, stderr
    a, b = onnx.load(str(out)), onnx.load(str(out2))
    assert [t.dims for t in a.graph.initializer] == [t.dims for t in b.graph.initializer]


def test_round_to_keeps_multiples(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    code, _, stderr = invoke("prune", str(RESNET), "-o", str(out), "--ratio", "0.4", "--round-to", "4")
    assert code == 0, stderr
    m = onnx.load(str(out))
    orig = {t.name: tuple(t.dims) for t in onnx.load(str(RESNET)).graph.initializer}
    conv_w = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    for t in m.graph.initializer:
        if t.name in conv_w and t.dims[0] != orig.get(t.name, (None,))[0]:
            assert t.dims[0] % 4 == 0, (t.name, t.dims)


@pytest.mark.parametrize("case", ["missing", "not-onnx", "truncated", "empty", "directory"])
def test_bad_model_files_give_one_line(tmp_path: Path, case: str) -> None:
    path = tmp_path / "m.onnx"
    if case == "not-onnx":
        path.write_text("this is not a model\n" * 20)
    elif case == "truncated":
        data = RESNET.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "directory":
        path.mkdir()
    code, _, stderr = invoke("prune", str(path), "-o", str(tmp_path / "o.onnx"))
    assert code == EXIT_USAGE
    one_line_error(stderr)
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("ratio", ["1.0", "-0.1", "1.5"])
def test_ratio_outside_range(tmp_path: Path, ratio: str) -> None:
    code, _, stderr = invoke("prune", str(RESNET), "-o", str(tmp_path / "o.onnx"), "--ratio", ratio)
    assert code == EXIT_USAGE
    assert "--ratio" in one_line_error(stderr)


@pytest.mark.parametrize("args, flags, main", [
    (["--block-fill", "identity"], "--block-fill", "--drop-blocks"),
    (["--block-score", "measured", "--distill-lr", "0.01"], "--block-score", "--drop-blocks"),
    (["--distill-steps", "3", "--distill-time", "9"], "--distill-steps, --distill-time", "--distill"),
])
def test_a_tuning_option_without_its_own_is_refused(tmp_path: Path, args: list[str], flags: str, main: str) -> None:
    code, _, stderr = invoke("prune", str(RESNET), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.3", *args)
    assert code == EXIT_USAGE
    assert one_line_error(stderr) == f"error: {flags} only tune {main}, which was not given"
    assert not (tmp_path / "o.onnx").exists()


def test_output_equal_to_input_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(RESNET.read_bytes())
    before = _digest(model)
    code, _, stderr = invoke("prune", str(model), "-o", str(model))
    assert code == EXIT_USAGE
    assert "input" in one_line_error(stderr)
    assert _digest(model) == before


def _single_conv_model(path: Path) -> None:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_nothing_prunable_has_its_own_exit_code(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    _single_conv_model(model)
    code, _, stderr = invoke("prune", str(model), "-o", str(tmp_path / "o.onnx"))
    assert code == EXIT_NOTHING_PRUNABLE
    assert "nothing prunable" in one_line_error(stderr)
    assert not (tmp_path / "o.onnx").exists()


def test_inspect_json_reports_groups_and_reasons(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    _single_conv_model(model)
    code, stdout, _ = invoke("inspect", str(model), "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["summary"]["groups"] == 1 and data["summary"]["prunable"] == 0
    assert any("graph output" in r for r in data["groups"][0]["blocked"])
    code, stdout, _ = invoke("inspect", str(RESNET))
    assert code == 0 and "prunable" in stdout


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(tmp_path / "nope.onnx"), "-o",
                           str(tmp_path / "o.onnx")], capture_output=True, text=True, check=False)
    assert proc.returncode == EXIT_USAGE
    one_line_error(proc.stderr)
