"""Latency against MACs after structured pruning, and how close budgets land to their targets.

Part 1 — the physical limit of structured pruning is latency ∝ MACs. Each convolutional model is
pruned to `--target-macs 0.5` (uniform allocation, l2, no reconstruction: it does not change the
shapes) with `--round-to` 1, 8 and 16, and the original and pruned models run in ONNX Runtime on the
CPU as interleaved A/B pairs (`onnxprune.bench.interleaved_latency`, graph optimisation on). The
speedup (median of per-pair ratios) is compared with the project's target 0.85 × (1 / MACs kept),
at batch 1 and batch 8 (n/a for a model whose input has a static batch of 1).

Part 2 — budgets: target vs achieved for `target_macs` / `target_params` 0.5 (uniform, global, and
per-group ratios from sensitivity curves) and for `target_latency` = 0.7 × the dense latency.

    .venv/bin/python benchmarks/latency.py                 # both parts, writes benchmarks/README.md
    .venv/bin/python benchmarks/latency.py --only resnet_ts --no-write --part speed
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from zoo import ZooEntry, zoo_entry  # noqa: E402

from onnxprune.api import analyse, prune  # noqa: E402
from onnxprune.bench import interleaved_latency, latency  # noqa: E402
from onnxprune.inputs import graph_inputs  # noqa: E402
from onnxprune.latency_budget import LatencyOptions  # noqa: E402
from onnxprune.sensitivity import sensitivity_curves  # noqa: E402
from onnxprune.stats import model_stats  # noqa: E402

BEGIN, END = "<!-- latency:begin -->", "<!-- latency:end -->"
README = ROOT / "benchmarks" / "README.md"
TARGET_MACS = 0.5
EFFICIENCY = 0.85  # speedup must reach 0.85 × (1 / MACs kept)
ROUND_TO = (1, 8, 16)
BATCHES = (1, 8)
SPEED_MODELS = ("resnet_ts", "resnext_ts", "mobilenetv2_ts", "efficientnet_ts", "densenet_ts", "inception_ts",
                "shufflenetv2_ts", "vgg_ts", "unet_ts", "yolov8_ts", "light_squeezenet", "light_inception_v2",
                "light_resnet50", "light_densenet121", "real_yolov8n")
BUDGET_MODELS = ("digits", "resnet_ts", "mobilenetv2_ts", "light_squeezenet", "real_yolov8n")
LATENCY_MODELS = ("light_squeezenet", "real_yolov8n", "light_resnet50")
SECONDS_PER_AB = 6.0  # time budget of one A/B measurement (sets the repeat count)


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    shapes: dict[str, tuple[int, ...]] | None


def _model(name: str) -> Model:
    if name == "digits":
        return Model(name, ROOT / "models" / "digits" / "digits_resnet.onnx", None)
    e: ZooEntry = zoo_entry(name)
    return Model(e.name, e.path, e.shapes)


def _static_batch(model: onnx.ModelProto) -> int | None:
    for s in graph_inputs(model):
        if s.dims and isinstance(s.dims[0], int):
            return int(s.dims[0])
    return None


def _repeat(model: onnx.ModelProto, batch: int, threads: int, shapes: dict[str, tuple[int, ...]] | None) -> int:
    one = latency(model, batch=batch, threads=threads, warmup=2, repeat=5, shapes=shapes).latency.median_ms
    return int(min(300, max(15, SECONDS_PER_AB / max(2 * one / 1e3, 1e-6))))


# ------------------------------------------------------------------------------------- part 1


def speed_rows(names: list[str], threads: int) -> list[list[str]]:
    rows = []
    for name in names:
        m = _model(name)
        dense = analyse(str(m.path), shapes=m.shapes)
        original = onnx.load(str(m.path))
        static = _static_batch(original)
        for rt in ROUND_TO:
            t0 = time.perf_counter()
            res = prune(original, dg=dense, target_macs=TARGET_MACS, round_to=rt, shapes=m.shapes, verify=False,
                        reconstruct=False)
            secs = time.perf_counter() - t0
            kept = model_stats(res.model, shapes=m.shapes).macs / model_stats(dense.model, shapes=m.shapes).macs
            need = EFFICIENCY / kept
            cells = [name, str(rt), f"{kept:.3f}", f"{need:.2f}×"]
            for b in BATCHES:
                if static is not None and static != b:
                    cells.append(f"n/a (static batch {static})")
                    continue
                rep = _repeat(original, b, threads, m.shapes)
                ab = interleaved_latency(original, res.model, batch=b, threads=threads, warmup=5, repeat=rep,
                                         shapes=m.shapes)
                ok = "**met**" if ab.speedup >= need else "missed"
                cells.append(f"{ab.a.median_ms:.2f} → {ab.b.median_ms:.2f} ms, {ab.speedup:.2f}× "
                             f"(p10–p90 {ab.speedup_p10:.2f}–{ab.speedup_p90:.2f}) {ok}")
            cells.append(f"{secs:.1f}")
            print(" | ".join(cells), flush=True)
            rows.append(cells)
    return rows


def speed_table(rows: list[list[str]], threads: int) -> str:
    head = ["model", "round-to", "MACs kept", "target speedup", *(f"batch {b}: orig → pruned, speedup" for b in BATCHES),
            "prune s"]
    lines = [f"ONNX Runtime CPU, {threads} intra-op thread(s), graph optimisation on, interleaved A/B pairs "
             f"(`interleaved_latency`), `--target-macs {TARGET_MACS}` uniform l2, no reconstruction. "
             f"Target: speedup ≥ {EFFICIENCY} × (1 / MACs kept).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- part 2


def budget_rows(names: list[str]) -> list[list[str]]:
    rows = []
    for name in names:
        m = _model(name)
        dg = analyse(str(m.path), shapes=m.shapes)
        calib = ROOT / "models" / "digits" / "calib.npz" if name == "digits" else None
        t0 = time.perf_counter()
        sens = sensitivity_curves(dg, calibration=calib, shapes=m.shapes, samples=16,
                                  ratios=(0.2, 0.4, 0.6, 0.8), model_name=name)
        s_secs = time.perf_counter() - t0
        for metric in ("macs", "params"):
            for how in ("uniform", "global", "sensitivity"):
                kw = {f"target_{metric}": 0.5}
                res = prune(str(m.path), dg=dg, shapes=m.shapes, verify=False, reconstruct=False,
                            allocation="global" if how == "global" else "uniform",
                            sensitivity=sens if how == "sensitivity" else None, **kw)  # type: ignore[arg-type]
                assert res.target is not None
                err = abs(res.target.achieved - 0.5) / 0.5
                note = f" (curves: {s_secs:.0f} s)" if how == "sensitivity" else ""
                rows.append([name, metric, how + note, "50.0%", f"{res.target.achieved:.1%}", f"{err:.1%}",
                             "yes" if err <= 0.03 else "no"])
                print(" | ".join(rows[-1]), flush=True)
    return rows


def latency_rows(names: list[str], threads: int) -> list[list[str]]:
    rows = []
    for name in names:
        m = _model(name)
        dg = analyse(str(m.path), shapes=m.shapes)
        dense_ms = latency(dg.model, threads=threads, warmup=5, repeat=30, shapes=m.shapes).latency.median_ms
        want = 0.7 * dense_ms
        opts = LatencyOptions(threads=threads, repeat=30)
        res = prune(str(m.path), dg=dg, shapes=m.shapes, verify=False, reconstruct=False, target_latency=want,
                    latency=opts)
        assert res.choice is not None and res.choice.latency is not None
        s = res.choice.latency
        err = abs(s.achieved_ms - want) / want
        rows.append([name, "latency (batch 1)", "uniform", f"{want:.2f} ms (0.7 × {s.dense_ms:.2f})",
                     f"{s.achieved_ms:.2f} ms at {s.chosen.achieved if s.chosen else 1.0:.1%} MACs, "
                     f"{len(s.steps)} steps", f"{err:.1%}", "yes" if s.within else "no"])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def budget_table(rows: list[list[str]]) -> str:
    head = ["model", "budget", "allocation", "target", "achieved", "|error| / target", "within 3 %"]
    lines = ["MACs and params measured with `model_stats` on the pruned model; sensitivity curves at ratios "
             "0.2/0.4/0.6/0.8 on 16 samples (digits: its calibration set; others: random inputs). Latency: "
             "`target_latency` = 0.7 × the dense median, searched over the MAC budget (each step measured "
             "with 30 runs).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- README


def write_block(text: str, command: str) -> None:
    """Replace (or append) the latency block of benchmarks/README.md; other blocks are left alone."""
    body = README.read_text() if README.exists() else "# Benchmarks\n"
    env = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPUs, "
           f"Python {platform.python_version()}")
    block = f"{BEGIN}\n{env}, with\n\n    {command}\n\n{text}\n{END}"
    if BEGIN in body and END in body:
        body = body[: body.index(BEGIN)] + block + body[body.index(END) + len(END):]
    else:
        body = body.rstrip("\n") + "\n\n## Latency vs MACs, and budgets (`benchmarks/latency.py`)\n\n" + block + "\n"
    README.write_text(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="model name (repeatable)")
    ap.add_argument("--part", choices=("speed", "budget", "all"), default="all")
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1: steadier on a shared box)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave benchmarks/README.md alone")
    args = ap.parse_args()
    parts = []
    if args.part in ("speed", "all"):
        names = [n for n in SPEED_MODELS if not args.only or n in args.only]
        parts.append("### Speedup at 0.5× MACs\n\n" + speed_table(speed_rows(names, args.threads), args.threads))
    if args.part in ("budget", "all"):
        names = [n for n in BUDGET_MODELS if not args.only or n in args.only]
        rows = budget_rows(names)
        rows += latency_rows([n for n in LATENCY_MODELS if not args.only or n in args.only], args.threads)
        parts.append("### Budgets: target vs achieved\n\n" + budget_table(rows))
    text = "\n\n".join(parts)
    print(text)
    if not args.no_write:
        write_block(text, ".venv/bin/python benchmarks/latency.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
