"""Bad input, tried on every command: one `error:` line with the documented exit code, never a
traceback or "internal error"; no input is overwritten; nothing is written before a failure."""

from __future__ import annotations

import faulthandler
import hashlib
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from graphs import Graph
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import EXIT_NOTHING_PRUNABLE, EXIT_USAGE, OnnxPruneError

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "models" / "zoo" / "resnet_ts.onnx"  # input "input": batch x 3 x 64 x 64
LSTM = ROOT / "models" / "zoo" / "lstm_ts.onnx"


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _conv_net() -> onnx.ModelProto:
    """x [1, 3, 8, 8] -> conv c1 (8) -> relu -> conv c2 (4): one prunable group (c1's channels)."""
    g = Graph(opset=13)
    x = g.input("x", (1, 3, 8, 8))
    g.output(g.conv(g.relu(g.conv(x, 3, 8, name="c1")), 8, 4, name="c2"))
    return g.build()


def _mlp(*, alpha: float = 1.0) -> onnx.ModelProto:
    g = Graph(opset=13)
    x = g.input("x", (1, 16))
    g.output(g.node("Gemm", [g.relu(g.gemm(x, 16, 8, name="g1")), g.rand("g2.w", (4, 8))], name="g2",
                    transB=1, alpha=alpha))
    return g.build()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(_conv_net(), str(path))
    return path


def _save(tmp_path: Path, m: onnx.ModelProto, name: str = "bad.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(m.SerializeToString())  # no checker: these models are broken on purpose
    return path


def _refused(code: int, stderr: str, *words: str) -> str:
    assert code == EXIT_USAGE, stderr
    line = one_line_error(stderr)
    for w in words:
        assert w in line, line
    return line


# -- 6. side outputs never overwrite an input -------------------------------------------------------

SIDE_OUTPUTS = {
    "prune --report": ["prune", "{m}", "-o", "{out}", "--report", "{m}"],
    "prune --save-plan": ["prune", "{m}", "-o", "{out}", "--save-plan", "{m}"],
    "sparsify --report": ["sparsify", "{m}", "-o", "{out}", "--sparsity", "0.5", "--report", "{m}"],
    "sensitivity --json": ["sensitivity", "{m}", "--json", "{m}"],
    "check-trt --json": ["check-trt", "{m}", "--json", "{m}"],
    "validate --json": ["validate", "{m}", "{m}", "--json", "{m}"],
    "bench --json": ["bench", "{m}", "--json", "{m}", "--no-memory", "--repeat", "1"],
}


@pytest.mark.parametrize("case", SIDE_OUTPUTS)
def test_a_side_output_never_overwrites_the_input(tmp_path: Path, model: Path, case: str) -> None:
    before = _digest(model)
    out = tmp_path / "out.onnx"
    code, _, err = invoke(*[a.format(m=model, out=out) for a in SIDE_OUTPUTS[case]])
    _refused(code, err, "input model")
    assert _digest(model) == before
    assert not out.exists()


@pytest.mark.parametrize("args", [
    ["prune", "{m}", "-o", "{t}/out.onnx", "--report", "{t}/out.onnx"],
    ["prune", "{m}", "-o", "{t}/out.onnx", "--report", "{t}/r.json", "--save-plan", "{t}/r.json"],
    ["prune", "{m}", "-o", "{t}/out.onnx", "--report", "{t}/out.onnx.data"],
    ["sparsify", "{m}", "-o", "{t}/out.onnx", "--sparsity", "0.5", "--report", "{t}/out.onnx"],
    ["sensitivity", "{m}", "--json", "{t}/c.json", "--plot", "{t}/c.json"],
    ["build-engine", "{m}", "-o", "{m}", "--emit-trtexec"],
    ["build-engine", "{m}", "-o", "{t}/e.plan", "--json", "{t}/e.plan"],
], ids=["report=-o", "report=save-plan", "report=data-of-o", "sparsify report=-o", "json=plot",
        "engine=model", "json=engine"])
def test_outputs_must_differ_from_each_other_and_the_model(tmp_path: Path, model: Path, args: list[str]) -> None:
    before = _digest(model)
    code, _, err = invoke(*[a.format(m=model, t=tmp_path) for a in args])
    _refused(code, err)
    assert _digest(model) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"], "nothing may be written"


def test_links_and_other_inputs_are_inputs_too(tmp_path: Path, model: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(model)
    code, _, err = invoke("prune", str(model), "-o", str(tmp_path / "o.onnx"), "--report", str(link))
    _refused(code, err, "input model")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.ones((2, 3, 8, 8), np.float32))
    before = _digest(calib)
    code, _, err = invoke("prune", str(model), "-o", str(tmp_path / "o.onnx"), "--calib", str(calib),
                          "--save-plan", str(calib))
    _refused(code, err, "--calib")
    assert _digest(calib) == before


def test_the_external_data_of_an_input_model_is_an_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxprune.io.model_io as io

    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 10_000)
    src = tmp_path / "src.onnx"
    io.save_model(onnx.load(str(RESNET)), src)
    (data,) = [p for p in tmp_path.iterdir() if p.suffix == ".data"]
    before = _digest(data)
    code, _, err = invoke("prune", str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(data))
    _refused(code, err, "external data")
    assert _digest(data) == before


# -- 7. an output folder that is missing or read-only: refused before any work ----------------------

def _read_only_folder(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root ignores permission bits; sysfs refuses new files even to root
        return Path("/sys")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("flag", ["-o", "--report", "--save-plan"])
@pytest.mark.parametrize("where", ["missing", "read-only"])
def test_output_folders_are_checked_before_any_work(tmp_path: Path, model: Path, flag: str, where: str) -> None:
    folder = tmp_path / "missing" if where == "missing" else _read_only_folder(tmp_path)
    paths = {"-o": tmp_path / "out.onnx", "--report": tmp_path / "r.json", "--save-plan": tmp_path / "p.json"}
    paths[flag] = folder / "x.out"
    args = [a for f, p in paths.items() for a in (f, str(p))]
    code, _, err = invoke("prune", str(model), *args)
    _refused(code, err, flag, "does not exist" if where == "missing" else "not writable")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ro") == ["m.onnx"], \
        "no pruned model may be written before the failure"


# -- 7. corrupt data files --------------------------------------------------------------------------

def _corrupt_npz(tmp_path: Path, how: str, key: str) -> Path:
    path = tmp_path / f"{how}.npz"
    np.savez(path, **{key: np.ones((4, 3, 8, 8), np.float32)})
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # a member whose bytes no longer match its CRC: fails only when read
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(f"{key}.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
        data[start:start + 16] = bytes(16)
        data[start] ^= 0xFF
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["truncated", "bad-member"])
@pytest.mark.parametrize("command", ["prune", "sparsify", "validate", "validate-labels"])
def test_a_corrupt_npz_is_one_line(tmp_path: Path, model: Path, how: str, command: str) -> None:
    bad = str(_corrupt_npz(tmp_path, how, "y" if command == "validate-labels" else "x"))
    out = str(tmp_path / "o.onnx")
    args = {"prune": ["prune", str(model), "-o", out, "--calib", bad],
            "sparsify": ["sparsify", str(model), "-o", out, "--sparsity", "0.5", "--calib", bad],
            "validate": ["validate", str(model), str(model), "--data", bad],
            "validate-labels": ["validate", str(model), str(model), "--labels", bad]}[command]
    code, _, err = invoke(*args)
    _refused(code, err, "not a readable .npy/.npz file")
    assert not Path(out).exists()


# -- 7. --shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, words", [
    ("input:-1x3x64x64", ["at least 1"]),
    ("input:0x3x64x64", ["at least 1"]),  # was: verify PASS on empty tensors
    ("input:1x3x99999x99999", ["elements"]),
    ("image:1x3x64x64", ["no input 'image'", "input"]),  # was: silently ignored
    ("input:1x3x32x32", ["static shape"]),
    ("input:1x3x64", ["rank"]),
])
@pytest.mark.parametrize("command", ["prune", "inspect", "sensitivity", "validate", "bench"])
def test_bad_shapes_are_refused(tmp_path: Path, shape: str, words: list[str], command: str) -> None:
    out = tmp_path / "o.onnx"
    args = {"prune": ["prune", str(RESNET), "-o", str(out)], "inspect": ["inspect", str(RESNET)],
            "sensitivity": ["sensitivity", str(RESNET)], "validate": ["validate", str(RESNET), str(RESNET)],
            "bench": ["bench", str(RESNET), "--no-memory", "--repeat", "1"]}[command]
    code, _, err = invoke(*args, "--shapes", shape)
    _refused(code, err, "--shapes", *words)
    assert not out.exists()


def test_build_engine_shapes_are_checked_against_the_model(model: Path) -> None:
    code, _, err = invoke("build-engine", str(model), "-o", "e.plan", "--emit-trtexec", "--shapes", "y:1x3x8x8")
    _refused(code, err, "no input 'y'")
    code, _, err = invoke("build-engine", str(model), "-o", "e.plan", "--emit-trtexec", "--shapes", "x:0x3x8x8")
    _refused(code, err, "at least 1")


# -- 7. broken models: every command refuses them with the defect named -----------------------------

def _raw_data_short(m: onnx.ModelProto) -> None:
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[:-8]


def _negative_dim(m: onnx.ModelProto) -> None:
    m.graph.initializer[0].dims[0] = -8


def _constant_dims(m: onnx.ModelProto) -> None:
    w = m.graph.initializer[0]
    t = numpy_helper.from_array(numpy_helper.to_array(w), w.name)
    t.dims[0] += 1
    m.graph.node.insert(0, helper.make_node("Constant", [], [w.name], name="k", value=t))
    m.graph.initializer.remove(w)


def _cycle(m: onnx.ModelProto) -> None:
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.input[0] = m.graph.output[0].name


def _missing(m: onnx.ModelProto) -> None:
    next(n for n in m.graph.node if n.op_type == "Relu").input[0] = "nowhere"


def _defined_twice(m: onnx.ModelProto) -> None:
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    conv = next(n for n in m.graph.node if n.input and n.input[0] == relu.output[0])
    relu.output[0] = relu.input[0]
    conv.input[0] = relu.input[0]


DEFECTS: dict[str, tuple[Callable[[onnx.ModelProto], None], str]] = {
    "raw_data length": (_raw_data_short, "bytes of raw_data"),
    "negative dims": (_negative_dim, "negative dimension"),
    "Constant dims": (_constant_dims, "node 'k' (Constant)"),
    "cycle": (_cycle, "cycle"),
    "missing tensor": (_missing, "'nowhere'"),
    "duplicate output": (_defined_twice, "defined twice"),
}


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("command", ["prune", "sparsify", "check-trt", "emit-trtexec", "inspect"])
def test_broken_models_are_refused_by_every_command(tmp_path: Path, defect: str, command: str) -> None:
    """check-trt and build-engine --emit-trtexec used to report "OK 0 error(s)" and exit 0."""
    m = _conv_net()
    mutate, words = DEFECTS[defect]
    mutate(m)
    bad = _save(tmp_path, m)
    out = tmp_path / "o.onnx"
    args = {"prune": ["prune", str(bad), "-o", str(out)],
            "sparsify": ["sparsify", str(bad), "-o", str(out), "--sparsity", "0.5"],
            "check-trt": ["check-trt", str(bad)],
            "emit-trtexec": ["build-engine", str(bad), "-o", str(tmp_path / "e.plan"), "--emit-trtexec"],
            "inspect": ["inspect", str(bad)]}[command]
    code, stdout, err = invoke(*args)
    _refused(code, err, str(bad), words)
    assert "OK" not in stdout and not out.exists()


@pytest.mark.parametrize("command", ["prune", "sparsify", "check-trt"])
def test_a_gemm_alpha_of_inf_is_refused(tmp_path: Path, command: str) -> None:
    bad = _save(tmp_path, _mlp(alpha=float("inf")))
    out = tmp_path / "o.onnx"
    args = {"prune": ["prune", str(bad), "-o", str(out)],
            "sparsify": ["sparsify", str(bad), "-o", str(out), "--sparsity", "0.5"],
            "check-trt": ["check-trt", str(bad)]}[command]
    code, _, err = invoke(*args)
    _refused(code, err, "'g2' (Gemm): alpha is inf")
    assert not out.exists()


@pytest.mark.parametrize("command", ["check-trt", "build-engine"])
def test_a_trt_version_that_is_no_version(model: Path, command: str) -> None:
    args = ["check-trt", str(model)] if command == "check-trt" else \
        ["build-engine", str(model), "-o", "e.plan", "--emit-trtexec"]
    code, _, err = invoke(*args, "--trt-version", "banana")
    _refused(code, err, "--trt-version 'banana'")


# -- 7. calibration data holding NaN or inf ---------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("command", ["prune", "sparsify"])
def test_calibration_data_must_be_finite(tmp_path: Path, value: float, command: str) -> None:
    data = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    data[2, 1, 5, 5] = value
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=data)
    out = tmp_path / "o.onnx"
    args = ["prune", str(RESNET), "-o", str(out), "--ratio", "0.5"] if command == "prune" else \
        ["sparsify", str(RESNET), "-o", str(out), "--sparsity", "0.5"]
    code, _, err = invoke(*args, "--calib", str(calib))
    _refused(code, err, "sample 2 of input 'input' holds NaN or inf")
    assert not out.exists(), "no NaN weights may be written"


@pytest.mark.parametrize("flag, value", [("--std", "0"), ("--std", "0.2,0,0.2"), ("--mean", "nan"),
                                         ("--scale", "inf")])
def test_image_options_that_make_inf(tmp_path: Path, flag: str, value: str) -> None:
    code, _, err = invoke("prune", str(RESNET), "-o", str(tmp_path / "o.onnx"), flag, value)
    _refused(code, err, flag, "finite")


# -- 7. sparsify validates its output like prune does ----------------------------------------------

def _matmul_model(*, opset: int, domain: str | None = None, w1: tuple[int, int] = (16, 16)) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(w1).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((w1[1], 4)).astype(np.float32), "w2")]
    mid = helper.make_node("Foo", ["h"], ["r"], name="foo", domain=domain) if domain else \
        helper.make_node("Relu", ["h"], ["r"], name="relu")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="m1"), mid,
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="m2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, w1[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(g, opset_imports=opsets)


@pytest.mark.parametrize("case", ["opset 1", "unknown domain"])
def test_sparsify_refuses_what_onnx_runtime_cannot_load(tmp_path: Path, case: str) -> None:
    m = _matmul_model(opset=1) if case == "opset 1" else _matmul_model(opset=13, domain="com.example")
    src = _save(tmp_path, m, "src.onnx")
    out = tmp_path / "o.onnx"
    code, _, err = invoke("sparsify", str(src), "-o", str(out), "--sparsity", "0.5")
    _refused(code, err, "ONNX Runtime cannot load")
    assert not out.exists()


def test_sparsify_leaves_a_weight_with_a_zero_dim_alone(tmp_path: Path) -> None:
    src = _save(tmp_path, _matmul_model(opset=13, w1=(16, 0)), "src.onnx")
    out = tmp_path / "o.onnx"
    code, stdout, err = invoke("sparsify", str(src), "-o", str(out), "--sparsity", "0.5")
    assert code == 0, err
    assert "holds no values" in stdout
    import onnxruntime as ort

    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


# -- 7. exit codes, probe sizes ---------------------------------------------------------------------

def test_nothing_prunable_is_exit_3_for_sensitivity_too(tmp_path: Path) -> None:
    g = Graph(opset=13)
    g.output(g.conv(g.input("x", (1, 3, 8, 8)), 3, 4, name="c"))  # its channels are the graph output
    src = _save(tmp_path, g.build(), "one.onnx")
    for args in (["prune", str(src), "-o", str(tmp_path / "o.onnx")], ["sensitivity", str(src)]):
        code, _, err = invoke(*args)
        assert code == EXIT_NOTHING_PRUNABLE, (args, err)
        assert "nothing prunable" in one_line_error(err)


def test_a_probe_length_too_short_for_the_model_names_shapes(tmp_path: Path) -> None:
    """A reflect pad of 100 samples (an STFT front end) needs more than the default 64."""
    g = Graph(opset=13)
    x = g.input("wave", (1, 1, "samples"))
    padded = g.node("Pad", [x, g.ints("pads", [0, 0, 100, 0, 0, 100])], name="pad", mode="reflect")
    g.output(g.conv(g.relu(g.conv(padded, 1, 8, rank=1, name="c1")), 8, 4, rank=1, name="c2"))
    src = _save(tmp_path, g.build(), "audio.onnx")
    out = tmp_path / "o.onnx"
    code, _, err = invoke("prune", str(src), "-o", str(out), "--round-to", "1")
    _refused(code, err, "wave 1x1x64", "--shapes")
    code, _, err = invoke("prune", str(src), "-o", str(out), "--shapes", "wave:1x1x400", "--round-to", "1")
    assert code == 0, err


# -- 7. the same command writes the same bytes -------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["prune", str(LSTM), "--ratio", "0.3"],
    ["sparsify", str(LSTM), "--sparsity", "0.5", "--refit"],
], ids=["prune", "sparsify"])
def test_output_bytes_do_not_depend_on_the_hash_seed(tmp_path: Path, command: list[str]) -> None:
    digests = set()
    for seed in ("1", "2"):
        out = tmp_path / f"o{seed}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-m", "onnxprune", *command, "-o", str(out)], env=env,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        digests.add(_digest(out))
    assert len(digests) == 1


# -- 6. a warning inside any command is printed once and the command ends ----------------------------

@pytest.fixture
def watchdog() -> Iterator[None]:
    """Echoing warnings once looped without end, eating memory: kill the run rather than hang."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _warning_then(real: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        warnings.warn("a test warning", UserWarning, stacklevel=2)
        return real(*args, **kwargs)
    return wrapped


WARN_IN = {  # command -> (module of the command, the function it calls that warns, arguments)
    "prune": ("prune_cmd", "prune", ["prune", "{m}", "-o", "{t}/o.onnx", "--round-to", "1"]),
    "sparsify": ("sparsify_cmd", "load_model", ["sparsify", "{m}", "-o", "{t}/o.onnx", "--sparsity", "0.5"]),
    "sensitivity": ("sensitivity_cmd", "sensitivity_curves", ["sensitivity", "{m}", "--ratios", "0.5", "--round-to", "1"]),
    "inspect": ("inspect_cmd", "analyse_model", ["inspect", "{m}"]),
    "validate": ("validate_cmd", "validate", ["validate", "{m}", "{m}", "--samples", "1"]),
    "bench": ("bench_cmd", "latency", ["bench", "{m}", "--no-memory", "--repeat", "1", "--warmup", "0"]),
    "check-trt": ("check_trt_cmd", "check_trt", ["check-trt", "{m}"]),
    "build-engine": ("build_engine_cmd", "trtexec_command", ["build-engine", "{m}", "-o", "{t}/e.plan",
                                                             "--emit-trtexec"]),
}


@pytest.mark.usefixtures("watchdog")
@pytest.mark.parametrize("command", WARN_IN)
def test_a_warning_inside_every_command_is_printed_once(tmp_path: Path, model: Path, command: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    module_name, function, args = WARN_IN[command]
    module = importlib.import_module(f"onnxprune.cli.{module_name}")
    monkeypatch.setattr(module, function, _warning_then(getattr(module, function)))
    code, _, err = invoke(*[a.format(m=model, t=tmp_path) for a in args])
    assert code == 0, err
    assert err.count("a test warning") == 1, err
    assert "warning: UserWarning: a test warning" in err


@pytest.mark.usefixtures("watchdog")
def test_a_warning_before_an_error_is_printed_once_too(tmp_path: Path, model: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxprune.cli.prune_cmd as prune_cmd

    def warn_and_fail(*args: Any, **kwargs: Any) -> Any:
        warnings.warn("before the failure", RuntimeWarning, stacklevel=2)
        warnings.warn("before the failure", RuntimeWarning, stacklevel=2)
        raise OnnxPruneError("a failure")

    monkeypatch.setattr(prune_cmd, "prune", warn_and_fail)
    code, _, err = invoke("prune", str(model), "-o", str(tmp_path / "o.onnx"))
    assert code == EXIT_USAGE
    assert err.count("before the failure") == 1 and err.strip().endswith("error: a failure"), err


@pytest.mark.usefixtures("watchdog")
def test_a_large_calibration_image_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow warns on an image over MAX_IMAGE_PIXELS and refuses one over twice that."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 pixels: a warning
    out = tmp_path / "o.onnx"
    code, _, err = invoke("prune", str(RESNET), "-o", str(out), "--calib", str(folder), "--ratio", "0.5")
    assert code == 0, err
    assert err.count("DecompressionBombWarning") == 1, err
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over twice the limit: an error
    code, _, err = invoke("prune", str(RESNET), "-o", str(tmp_path / "o2.onnx"), "--calib", str(folder))
    _refused(code, err, "cannot read image")
