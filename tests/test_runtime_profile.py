"""`--round-to auto`: ONNX Runtime's NCHWc block from the CPU flags (injected or forced here, never this machine's)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph, group_of

from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.measure.curves import SensitivityResult, sensitivity_curves
from onnxprune.planning import cpu_profile as runtime_profile
from onnxprune.planning.cpu_profile import CPU_ENV, cpu_flags, cpu_name, nchwc_block, ort_cpu_profile
from onnxprune.planning.rounding import resolve_round_to, rounding_policy

AVX512 = "fpu sse2 avx avx2 fma avx512f avx512bw avx512vl"
AVX2 = "fpu sse2 avx avx2 fma"


def _cpu(monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    """Force a CPU profile (ONNXPRUNE_CPU) for the rest of the test."""
    monkeypatch.setenv(CPU_ENV, profile)


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return path


def _model(path: Path | None = None) -> onnx.ModelProto:
    """conv(3->32) -> relu -> conv(32->4): one prunable group of 32 channels, feeding a group==1 conv."""
    g = Graph(opset=17)
    x = g.input("x", (1, 3, 8, 8))
    g.output(g.conv(g.relu(g.conv(x, 3, 32, name="c1")), 32, 4, name="c2"))
    model = g.build()
    if path is not None:
        onnx.save(model, str(path))
    return model


def _out_channels(model: onnx.ModelProto, node: str) -> int:
    conv = next(n for n in model.graph.node if n.name == node)
    w = next(i for i in model.graph.initializer if i.name == conv.input[1])
    return int(w.dims[0])


@pytest.mark.parametrize("flags, block", [
    (AVX512.split(), 16),
    (AVX2.split(), 8),
    (["avx2"], 1),  # AVX2 without FMA: MLAS has no NCHWc kernels
    (["AVX512F"], 16),
    ([], 1),
])
def test_block_from_flags(flags: list[str], block: int) -> None:
    assert nchwc_block(flags)[0] == block
    assert ort_cpu_profile(flags=flags).round_to == block


def test_cpuinfo_parsing_and_missing_file(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {AVX2}\n")
    assert cpu_flags(info) == frozenset(AVX2.split())
    profile = ort_cpu_profile(cpuinfo=info)
    assert (profile.block, profile.isa, profile.source) == (8, "avx2+fma", str(info))
    missing = ort_cpu_profile(cpuinfo=tmp_path / "nope")
    assert missing.block == 1 and "unknown" in missing.source


def test_cpu_name_from_cpuinfo(tmp_path: Path) -> None:
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text(f"processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: {AVX2}\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd\nHardware\t: Jetson Board\n")
    assert cpu_name(x86) == "Some CPU @ 2.0GHz"
    assert cpu_name(arm) == "Jetson Board"
    assert cpu_flags(arm) == frozenset({"fp", "asimd"})
    assert cpu_name(tmp_path / "nope")  # no file: the platform's string, never empty


@pytest.mark.parametrize("value, block, isa", [
    ("avx512", 16, "avx512f"), ("avx2", 8, "avx2+fma"), ("none", 1, "none"), (" AVX2 ", 8, "avx2+fma"),
])
def test_onnxprune_cpu_forces_the_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, block: int,
                                          isa: str) -> None:
    monkeypatch.setenv(CPU_ENV, value)
    profile = ort_cpu_profile()
    assert (profile.block, profile.isa) == (block, isa)
    assert f"forced by ONNXPRUNE_CPU={value.strip().lower()}" in profile.describe()
    assert resolve_round_to("auto") == block and resolve_round_to("4") == 4
    # given flags or a given cpuinfo file describe that CPU, forced or not
    assert ort_cpu_profile(flags=AVX2.split()).block == 8
    assert ort_cpu_profile(cpuinfo=_cpuinfo(tmp_path, AVX512)).block == 16


def test_unforced_auto_reads_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CPU_ENV)
    path = _cpuinfo(tmp_path, AVX2)
    monkeypatch.setattr(runtime_profile, "CPUINFO", path)
    profile = ort_cpu_profile()
    assert (profile.block, profile.source) == (8, str(path)) and f"from {path}" in profile.describe()


def test_unknown_forced_profile_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CPU_ENV, "avx1024")
    with pytest.raises(OnnxPruneError, match="ONNXPRUNE_CPU='avx1024': choose one of avx512, avx2, none"):
        rounding_policy(None)
    src = tmp_path / "m.onnx"
    _model(src)
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(tmp_path / "o.onnx")])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "ONNXPRUNE_CPU" in lines[0], r.stderr
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("round_to, target, value", [
    (None, "ort", 16), ("auto", "ort", 16), ("AUTO", "ort", 16),
    ("4", "ort", 4), ("1", "ort", 1), (3, "ort", 3),
    (None, "tensorrt", 8), ("auto", "tensorrt", 8), ("1", "tensorrt", 1), ("32", "tensorrt", 32),
])
def test_rounding_policy_explicit_wins(round_to: str | int | None, target: str, value: int) -> None:
    m = rounding_policy(round_to, target=target, flags=AVX512.split())
    assert m.value == value
    assert str(value) in m.describe()


@pytest.mark.parametrize("bad", ["0", "-8", "sixteen", "1.5", ""])
def test_bad_round_to(bad: str) -> None:
    with pytest.raises(OnnxPruneError, match="--round-to"):
        rounding_policy(bad, flags=AVX512.split())


def test_api_auto_follows_the_cpu_and_default_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    dg = analyse(model)
    assert group_of(dg, "c1").size == 32
    # ratio 0.4 asks to keep 20 of 32: the nearest whole blocks are 16 at block 16 (|16-20| < |32-20|),
    # 24 at block 8 (16 and 24 tie: a tie keeps more), 20 with exact counts.
    _cpu(monkeypatch, "avx2")
    assert resolve_round_to("auto") == 8
    assert _out_channels(prune(model, dg=dg, ratio=0.4, round_to="auto").model, "c1") == 24
    assert _out_channels(prune(model, dg=dg, ratio=0.4).model, "c1") == 20  # the API default is 1
    _cpu(monkeypatch, "avx512")
    res = prune(model, dg=dg, ratio=0.4, round_to="auto", verify=True)
    assert _out_channels(res.model, "c1") == 16 and res.plan.round_to == 16
    assert res.verify is not None and res.verify.ok
    with pytest.raises(OnnxPruneError, match="round-to"):
        prune(model, dg=dg, ratio=0.4, round_to=0)


@pytest.mark.parametrize("profile, args, channels, reported", [
    ("avx512", [], 16, 16),  # default: auto -> 16; keeping 20 rounds to the nearest block, 16
    ("avx2", [], 24, 8),
    ("none", [], 20, 1),  # no NCHWc kernels: exact counts
    ("avx512", ["--round-to", "1"], 20, 1),
    ("avx512", ["--round-to", "4"], 20, 4),
    ("avx512", ["--for", "tensorrt"], 24, 8),
    ("avx2", ["--round-to", "auto"], 24, 8),
])
def test_cli_prune_default_is_the_cpu_block(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, profile: str,
                                            args: list[str], channels: int, reported: int) -> None:
    _cpu(monkeypatch, profile)
    src, out, rep = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    _model(src)
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--ratio", "0.4", "--report", str(rep),
                                  "--no-progress", *args])
    assert r.exit_code == 0, r.stderr
    assert _out_channels(onnx.load(str(out)), "c1") == channels
    report = json.loads(rep.read_text())
    assert report["round_to"] == reported and report["plan"]["round_to"] == reported
    assert f"multiples of {reported}" in r.stdout
    achieved = (32 - channels) / 32
    assert f"removed {32 - channels} of 32 prunable channels (requested 40.0%, achieved {achieved:.1%})" in r.stdout
    removal = report["removal"]
    assert (removal["channels_requested"], removal["channels_achieved"]) == (0.4, achieved)
    assert removal["channels_removed"] == 32 - channels and removal["channels_prunable"] == 32
    assert ("too narrow to lose a whole block" in r.stdout) == (achieved < 0.4 - 0.05 and reported > 1)
    if not args:
        assert "auto" in report["round_to_reason"] and "auto" in r.stdout
        assert f"forced by ONNXPRUNE_CPU={profile}" in r.stdout


@pytest.mark.parametrize("bad", ["0", "many"])
def test_cli_bad_round_to_is_one_line(tmp_path: Path, bad: str) -> None:
    src = tmp_path / "m.onnx"
    _model(src)
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(tmp_path / "o.onnx"), "--round-to", bad])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--round-to" in lines[0], r.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_sensitivity_rounds_like_prune(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _cpu(monkeypatch, "avx2")
    src, js = tmp_path / "m.onnx", tmp_path / "s.json"
    _model(src)
    r = CliRunner().invoke(main, ["sensitivity", str(src), "--ratios", "0.4", "--calib-samples", "2",
                                  "--json", str(js), "--no-progress"])
    assert r.exit_code == 0, r.stderr
    curves = SensitivityResult.load(js)
    assert curves.round_to == 8 and "multiples of 8" in r.stdout
    assert [p.removed for p in curves.curves[0].points] == [8]  # keeps 24, not 20
    exact = sensitivity_curves(analyse(_model()), ratios=(0.4,), samples=2, round_to=1)
    assert [p.removed for p in exact.curves[0].points] == [12]


@pytest.mark.parametrize("args, note", [([], True), (["--round-to", "1"], False)])
def test_cli_says_when_the_multiple_stops_the_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     args: list[str], note: bool) -> None:
    _cpu(monkeypatch, "avx512")
    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    _model(src)
    # both convs scale with the 32-channel group: 8 kept = 25 %; multiples of 16 keep at least 16 (50 %)
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--target-macs", "0.25", "--no-progress", *args])
    assert r.exit_code == 0, r.stderr
    assert ("note: multiples of 16 cannot shrink" in r.stdout) is note
    assert ("outside the 3% tolerance" in r.stdout) is note


@pytest.mark.parametrize("flags, value, prefer", [(AVX2, 8, 16), (AVX512, 16, None), ("fpu sse2", 1, None)])
def test_auto_prefers_16_for_budgets_only_on_avx2(flags: str, value: int, prefer: int | None) -> None:
    m = rounding_policy("auto", flags=flags.split())
    assert (m.value, m.prefer) == (value, prefer)
    assert rounding_policy("8", flags=flags.split()).prefer is None  # an explicit multiple is kept as given


@pytest.mark.parametrize("target, used", [("0.5", 16), ("0.25", 8)])
def test_cli_budget_on_avx2_keeps_16_when_it_lands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    target: str, used: int) -> None:
    """Both convs scale with the 32-channel group: 16 kept = 50 % of the MACs (lands with multiples
    of 16); 8 kept = 25 %, which multiples of 16 cannot reach, so the CPU's block 8 is used."""
    _cpu(monkeypatch, "avx2")
    src, out, rep = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    _model(src)
    r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), "--target-macs", target, "--report", str(rep),
                                  "--no-progress"])
    assert r.exit_code == 0, r.stderr
    assert _out_channels(onnx.load(str(out)), "c1") == round(32 * float(target))
    report = json.loads(rep.read_text())
    assert report["round_to"] == used and report["plan"]["round_to"] == used
    assert f"multiples of {used}" in r.stdout
    assert ("and it lands" if used == 16 else "cannot land it") in r.stdout
    assert ("and it lands" if used == 16 else "cannot land it") in report["round_to_reason"]
    assert "outside the 3% tolerance" not in r.stdout


def test_api_auto_budget_and_explicit_multiple(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _cpu(monkeypatch, "avx2")
    model = _model()
    dg = analyse(model)
    assert prune(model, dg=dg, round_to="auto", target_macs=0.5).plan.round_to == 16
    assert prune(model, dg=dg, round_to="auto", ratio=0.5).plan.round_to == 8  # a ratio: the block
    assert prune(model, dg=dg, round_to=8, target_macs=0.5).plan.round_to == 8  # explicit: as given
    res = prune(model, dg=dg, round_to=8, prefer_round_to=16, target_macs=0.5, verify=True)
    assert res.plan.round_to == 16 and res.verify is not None and res.verify.ok
    with pytest.raises(OnnxPruneError, match="prefer_round_to must be at least 1"):
        prune(model, dg=dg, round_to=8, prefer_round_to=-3, target_macs=0.5)
