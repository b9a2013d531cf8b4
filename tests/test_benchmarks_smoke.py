"""Smoke test of benchmarks/accuracy.py: the `--quick` digits run (no torch, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_accuracy_benchmark_quick() -> None:
    readme = ROOT / "benchmarks" / "README.md"
    before = readme.read_text() if readme.exists() else None
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--quick", "--no-write"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Dense test accuracy: **100.0 %**" in out
    assert "| l2 | no | uniform |" in out
    assert "| 2:4 | magnitude |" in out
    assert "Traceback" not in proc.stderr
    assert (readme.read_text() if readme.exists() else None) == before


def test_profile_ops_compares_kernel_times() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_ops.py"),
                           str(ROOT / "models" / "zoo" / "resnet_ts.onnx"), "--shape", "input:1x3x64x64",
                           "--runs", "3", "--nodes", "2"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    kept = float(lines[0].split("MACs kept ")[1].split(";")[0])
    assert 0.3 < kept < 0.9  # resnet_ts at --round-to auto (16): 0.748 on AVX-512 hosts
    assert any(line.strip().startswith("conv ") for line in lines)
    assert any("ceiling" in line for line in lines)
    assert "Conv kernels" in proc.stdout


def test_score_drift_counts_pairs_either_model_scores() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from _acc_metrics import score_drift

    dense = np.zeros((1, 4 + 2, 3), dtype=np.float32)
    pruned = dense.copy()
    dense[0, 4, 0], pruned[0, 4, 0] = 0.8, 0.6   # both score: |Δ| 0.2
    pruned[0, 5, 2] = 0.1                           # only the pruned model scores: |Δ| 0.1
    dense[0, 5, 1], pruned[0, 5, 1] = 0.01, 0.02    # neither reaches 0.05: left out
    dense[0, :4] = 100.0                            # box coordinates are not scores
    drift, pairs = score_drift([dense], [pruned])
    assert pairs == 2 and abs(drift - 0.15) < 1e-6


def test_yolo_variants_refuse_unknown_names_before_any_work() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from yolo_variants import VARIANTS, main, variants

    with pytest.raises(SystemExit, match=r"unknown variant\(s\) \['nope'\]; choose from: reference, "):
        main(["reference", "nope"])
    assert tuple(variants(None, None)) == VARIANTS  # type: ignore[arg-type]  # the lambdas are not called


def test_yolo_variants_cap_drops_the_points_above_it() -> None:
    """benchmarks/yolo_variants.capped: curves cut at a ratio still allocate, and never beyond the cut."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import warnings

    from yolo_variants import capped

    from onnxprune.api import analyse, prune
    from onnxprune.measure.curves import sensitivity_curves

    dg = analyse(ROOT / "models" / "zoo" / "resnet_ts.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random inputs: CalibrationWarning
        curves = sensitivity_curves(dg, ratios=(0.2, 0.4, 0.6), samples=2)
    cut = capped(curves, 0.4)
    assert cut.ratios == [0.2, 0.4] and curves.ratios == [0.2, 0.4, 0.6]
    assert all(p.ratio <= 0.4 for g in cut.curves for p in g.points)
    assert [len(g.points) for g in curves.curves] == [3] * len(curves.curves)
    res = prune(dg.model, target_macs=0.8, sensitivity=cut, dg=dg)
    sizes = {g.id: g.size for g in dg.groups}
    assert res.plan.removals
    for gid, idx in res.plan.removals.items():  # the allocation only moves along the measured points
        assert len(idx) <= round(0.4 * sizes[gid]), (gid, len(idx), sizes[gid])


def test_accuracy_pruner_in_steps_reaches_the_budget() -> None:
    """benchmarks/_acc_prune: at_macs(steps=2) goes through prune_in_steps with the curves of step 1."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import warnings

    import onnx
    from _acc_prune import StructuredPruner

    from onnxprune.measure.curves import sensitivity_curves

    pruner = StructuredPruner(onnx.load(str(ROOT / "models" / "zoo" / "resnet_ts.onnx")), None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random inputs: CalibrationWarning
        curves = sensitivity_curves(pruner.dg, ratios=(0.25, 0.5), samples=2)
        out = pruner.at_macs(0.7, "l2", sensitivity=curves, steps=2)
    assert out.model is not None and out.how == "2 steps", out.note
    assert out.macs_kept is not None and abs(out.macs_kept - 0.7) <= 0.03 * 0.7


def test_goal_line_reports_the_resolution_of_the_metric() -> None:
    """benchmarks/_acc_real.goal_line: the verdict against 0.9, what one box fewer gives, and the
    noise-floor row (never counted as a pruning row)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _acc_real import NOISE_ROW, goal_line, one_box_fewer

    def row(f1: str, notes: str, method: str = "method") -> list[str]:
        return ["YOLOv8n (nudenet 320n)", method, "0.70", "0.999", f1, notes]

    edge = row("0.903", "14 of 16 dense / 15 pruned boxes, mean abs score change 0.045")
    assert one_box_fewer(edge[5]) == 2 * 13 / 30
    floor = row("0.950", "no pruning: 0.882-0.909 over 10 draws of N(0, 1/255 of the pixel range)", NOISE_ROW)
    line = goal_line([floor, edge, row("0.867", "13 of 16 dense / 14 pruned boxes")])
    assert "best measured 0.903 (method): met by 1 of 2 rows. One matched box fewer gives 0.867." in line
    assert "scores 0.950 against itself with one grey level of input noise (0.882-0.909 over 10 draws)" in line
    assert goal_line([row("0.800", "12 of 16 dense / 14 pruned boxes")]).endswith("not met. One matched box fewer "
                                                                                   "gives 0.759.")
    assert "not measured" in goal_line([floor])
    assert "not measured" in goal_line([["PP-OCRv4 det", "m", "0.70", "0.9", "0.899", ""]])


def test_zoo_benchmark_reports_requested_and_achieved_per_profile() -> None:
    readme = ROOT / "benchmarks" / "README.md"
    before = readme.read_text()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "zoo.py"), "--only", "resnet_ts", "--no-latency",
                           "--profiles", "avx512", "none"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "| resnet_ts | 10/9/1 | 0.30 → 0.29 | " in out  # blocks of 16: 64 of 224 channels
    assert "| resnet_ts | 0.29 / 0.75 / PASS | 0.27 / 0.58 / PASS |" in out
    assert "- avx512: 1/1 models (100.0 %) prune with verify PASS" in out
    assert readme.read_text() == before  # --only never writes the README


def test_transformers_benchmark_runs_one_file() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transformers.py"), "--no-latency",
                           "bert_ort_fused"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| bert_ort_fused |")]
    assert len(rows) == 3
    ours = rows[0].split(" | ")
    assert ours[1] == "onnxprune" and " heads" in ours[2] and "oracle PASS" in ours[2] and ours[5] == "yes"
    assert ours[2].endswith("num_heads 2/2") and ours[3] == "69.7%"  # whole fused heads, at 0.7 of the params


def test_depth_benchmark_pairs_decoder_layers_and_scores_them() -> None:
    from bench_scripts import load_script

    from onnxprune.calib.source import CalibConfig
    from onnxprune.graph.blocks import find_blocks

    depth = load_script("depth")
    model = onnx.load(str(ROOT / "models" / "transformers" / "lm_llama.onnx"))
    layers = depth.decoder_layers(find_blocks(model))
    assert [a.name.split("/")[-2] for a, _ in layers] == [f"layers.{i}" for i in range(4)]
    calib = CalibConfig(path=ROOT / "models" / "transformers" / "lm_calib.npz", samples=4)
    bi = depth.layer_influence(model, layers, calib)
    assert len(bi) == 4 and all(0.0 < v < 2.0 for v in bi)
def test_llm_memory_quick_measures_a_child_process() -> None:
    from bench_scripts import run_quick

    row = next(line for line in run_quick("llm_memory", "--quick").splitlines()
               if line.startswith("| this tree | 0.02 GiB |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[5].split()[0]) > 0.05, "the child's peak RSS, not a placeholder"  # GiB
    assert cells[-1] == "ok"


def test_every_benchmark_script_imports() -> None:
    """A script whose imports broke (a moved function) fails here, not at the next benchmark run."""
    stems = sorted(p.stem for p in (ROOT / "benchmarks").glob("[a-z]*.py"))
    code = ("import sys; sys.path[:0] = ['benchmarks', 'tests']\nfrom bench_scripts import load_script\n"
            f"for stem in {stems!r}:\n    load_script(stem)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(stems) >= 10


def test_task_fidelity_greedy_ctc_decode_and_line_agreement() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from task_fidelity import ctc_greedy, edit_distance, text_agreement

    def onehot(path: list[int]) -> np.ndarray:
        return np.eye(4, dtype=np.float32)[path][None]  # [1, T, 4]

    assert ctc_greedy(onehot([0, 1, 1, 0, 1, 2, 2, 0])) == [(1, 1, 2)]  # repeats collapse, a blank separates
    assert edit_distance((1, 2, 3), (1, 3)) == 1 and edit_distance((), (2, 2)) == 2
    exact, cer, _ = text_agreement([onehot([1, 0, 2]), onehot([3, 3, 0])], [onehot([1, 1, 2]), onehot([3, 0, 3])])
    assert exact == 0.5 and cer == 1 / 3  # line 1 reads the same; line 2 reads "33" for "3"
