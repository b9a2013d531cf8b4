"""Peak memory and time of `onnxprune prune` against model size, on synthetic decoder stacks.

Each model is a stack of decoder MLP blocks on a residual stream (LLM-like widths, fp32, weights in
external data): per layer an RMSNorm (Mul, ReduceMean, Add, Sqrt, Div, Mul by a learned scale),
MatMul(hidden -> ffn) + bias, Gelu, MatMul(ffn -> hidden), residual Add. The input is
[batch, seq, hidden] with both dims dynamic. The weights are written straight into the data file in
row blocks, so generating a 6 GiB model takes a few MiB of memory. Models go to a scratch folder
(default: a temp folder, removed afterwards), never into the repository.

Each size runs `onnxprune prune MODEL -o OUT --ratio 0.3 --verify --no-progress` in its own
subprocess; the wall time and the child's peak RSS (`os.wait4`'s ru_maxrss: resident pages,
file-backed mmapped pages included) are recorded. `--stages` instead runs the same pipeline in
process and reports the peak RSS of each stage (VmHWM, reset before each), for profiling.
`--source DIR --label NAME` runs the CLI from another source tree (an older commit unpacked with
`git archive COMMIT onnxprune | tar -x -C DIR`), and `--before JSON` puts such runs beside these in
the table, for a before/after.

    python benchmarks/llm_memory.py                        # 0.5, 2 and 6 GiB, writes the README block
    python benchmarks/llm_memory.py --sizes 2 --no-write   # one size, print only
    python benchmarks/llm_memory.py --sizes 2 --stages     # where the memory goes, stage by stage
    python benchmarks/llm_memory.py --quick                # a ~20 MiB model, print only (smoke test)
    python benchmarks/llm_memory.py --sizes 0.5 --source /tmp/old --label "main abc123" --no-write --json old.json
    python benchmarks/llm_memory.py --before old.json      # this tree's runs with the old ones beside
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _readme import replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- llm-memory:begin -->", "<!-- llm-memory:end -->"
GIB = 1 << 30
ALIGN = 4096
ROWS = 256  # rows of a weight generated at a time
OPSET = 20  # Gelu
T = TypeVar("T")


@dataclass(frozen=True)
class Decoder:
    layers: int
    hidden: int
    ffn: int

    @property
    def weight_bytes(self) -> int:
        return self.layers * 4 * (2 * self.hidden * self.ffn + self.ffn + self.hidden)

    @staticmethod
    def of_size(gib: float, *, hidden: int, ffn: int) -> Decoder:
        per_layer = 4 * (2 * hidden * ffn + ffn + hidden)
        return Decoder(max(1, round(gib * GIB / per_layer)), hidden, ffn)


def _write_tensor(fh: BinaryIO, name: str, shape: tuple[int, ...], scale: float,
                  rng: np.random.Generator, location: str) -> TensorProto:
    """Append a normal(0, scale) float32 tensor to the open data file, block by block."""
    fh.write(b"\0" * (-fh.tell() % ALIGN))
    offset = fh.tell()
    rows = shape[0] if len(shape) > 1 else 1
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    for start in range(0, rows, ROWS):
        block = rng.standard_normal((min(ROWS, rows - start), cols), dtype=np.float32)
        block *= scale
        fh.write(block.tobytes())
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape), data_location=TensorProto.EXTERNAL)
    length = fh.tell() - offset
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=key, value=value)
    return t


def write_decoder(path: Path, spec: Decoder, *, seed: int = 0) -> Path:
    """`path` and `path.data`: the decoder stack of `spec`, weights written as they are generated."""
    h, f = spec.hidden, spec.ffn
    rng = np.random.default_rng(seed)
    location = path.name + ".data"
    nodes, inits = [], []
    cur = "x"
    with open(path.parent / location, "wb") as fh:
        for i in range(spec.layers):
            p = f"layer{i}"
            inits.append(_write_tensor(fh, f"{p}.norm.weight", (h,), 0.1, rng, location))
            inits.append(_write_tensor(fh, f"{p}.up.weight", (h, f), h ** -0.5, rng, location))
            inits.append(_write_tensor(fh, f"{p}.up.bias", (f,), 0.02, rng, location))
            inits.append(_write_tensor(fh, f"{p}.down.weight", (f, h), 0.5 * f ** -0.5, rng, location))
            nodes += [
                helper.make_node("Mul", [cur, cur], [f"{p}.sq"], name=f"{p}.sq"),
                helper.make_node("ReduceMean", [f"{p}.sq", "axes_last"], [f"{p}.ms"], name=f"{p}.ms", keepdims=1),
                helper.make_node("Add", [f"{p}.ms", "eps"], [f"{p}.mse"], name=f"{p}.mse"),
                helper.make_node("Sqrt", [f"{p}.mse"], [f"{p}.rms"], name=f"{p}.rms"),
                helper.make_node("Div", [cur, f"{p}.rms"], [f"{p}.normed"], name=f"{p}.normed"),
                helper.make_node("Mul", [f"{p}.normed", f"{p}.norm.weight"], [f"{p}.scaled"], name=f"{p}.scaled"),
                helper.make_node("MatMul", [f"{p}.scaled", f"{p}.up.weight"], [f"{p}.up"], name=f"{p}.up"),
                helper.make_node("Add", [f"{p}.up", f"{p}.up.bias"], [f"{p}.upb"], name=f"{p}.upb"),
                helper.make_node("Gelu", [f"{p}.upb"], [f"{p}.act"], name=f"{p}.act"),
                helper.make_node("MatMul", [f"{p}.act", f"{p}.down.weight"], [f"{p}.down"], name=f"{p}.down"),
                helper.make_node("Add", [cur, f"{p}.down"], [f"{p}.out"], name=f"{p}.res"),
            ]
            cur = f"{p}.out"
    inits += [helper.make_tensor("axes_last", TensorProto.INT64, [1], [-1]),
              helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-6])]
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    graph = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", h])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)
    path.write_bytes(model.SerializeToString())
    return path


def on_disk(path: Path) -> int:
    """Bytes of a model file and the data files beside it named after it."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


@dataclass(frozen=True)
class Run:
    gib: float
    layers: int
    model_bytes: int
    seconds: float
    peak_rss: int
    exit_code: int
    output_bytes: int
    tail: str
    code: str = "this tree"

    @property
    def ratio(self) -> float:
        return self.peak_rss / self.model_bytes

    @property
    def bound(self) -> int:
        return int(1.5 * self.model_bytes + GIB)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from onnxprune.cli import main; main()", *args]


def prune_args(model: Path, out: Path) -> list[str]:
    return ["prune", str(model), "-o", str(out), "--ratio", "0.3", "--verify", "--no-progress"]


def measure(model: Path, out: Path, gib: float, layers: int, *, source: Path = ROOT, code: str = "this tree") -> Run:
    """One `onnxprune prune` in a subprocess (run from `source`'s onnxprune): wall time and the
    child's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        # cwd too: `python -c` puts the working folder first on sys.path
        proc = subprocess.Popen(cli(*prune_args(model, out)), stdout=log, stderr=subprocess.STDOUT, cwd=source,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read().decode(errors="replace")
    tail = " / ".join(ln.strip() for ln in text.strip().splitlines()[-3:])
    written = on_disk(out) if out.exists() else 0
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return Run(gib, layers, on_disk(model), seconds, rss, proc.returncode, written, tail, code)


def stage_profile(model: Path, out: Path) -> list[tuple[str, float, int, int]]:
    """(stage, seconds, peak RSS during it, RSS after it) for load, each pipeline stage, stats and save."""
    from onnxprune.api import PruneConfig
    from onnxprune.calib.source import CalibrationSource
    from onnxprune.io.model_io import load_model
    from onnxprune.measure.bench import _proc_status_bytes, _reset_linux_peak
    from onnxprune.pipeline.stages import PruneState, default_pipeline

    rows: list[tuple[str, float, int, int]] = []

    def probe(name: str, fn: Callable[[], T]) -> T:
        _reset_linux_peak()
        t0 = time.perf_counter()
        got = fn()
        rows.append((name, time.perf_counter() - t0, _proc_status_bytes("VmHWM") or 0, _proc_status_bytes("VmRSS") or 0))
        print(f"  {rows[-1][0]:12s} {rows[-1][1]:7.1f} s  peak {rows[-1][2] / GIB:6.2f} GiB  "
              f"after {rows[-1][3] / GIB:6.2f} GiB", flush=True)
        return got

    proto = probe("load", lambda: load_model(model))
    cfg = PruneConfig.create(ratio=0.3, verify=True).validate()
    cfg = cfg.replace(calibration=CalibrationSource.of(None, proto))
    state = PruneState(cfg, proto)
    for stage in default_pipeline().stages:
        probe(stage.name, functools.partial(stage.run, state))
    result = state.result()
    probe("stats", lambda: result.stats)
    probe("save", lambda: result.save(out))
    return rows


def table(runs: Sequence[Run]) -> str:
    lines = ["| code | model | layers | on disk | time | peak RSS | RSS / size | bound 1.5×size+1 GiB | s per GiB | result |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r.gib, r.code != "this tree")):
        ok = "ok" if r.exit_code == 0 else f"exit {r.exit_code}"
        within = "within" if r.peak_rss <= r.bound else "**over**"
        lines.append(f"| {r.code} | {r.gib:g} GiB | {r.layers} | {r.model_bytes / GIB:.2f} GiB | {r.seconds:.0f} s | "
                     f"{r.peak_rss / GIB:.2f} GiB | {r.ratio:.2f}× | {r.bound / GIB:.2f} GiB ({within}) | "
                     f"{r.seconds / (r.model_bytes / GIB):.1f} | {ok} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM"


def _before_note(before: Sequence[Run]) -> str:
    if not before:
        return ""
    labels = ", ".join(sorted({r.code for r in before}))
    sizes = ",".join(sorted({f"{r.gib:g}" for r in before}))
    return (f" Rows labelled {labels}: the same command run from that commit's source tree "
            f"(`git archive COMMIT onnxprune | tar -x -C DIR`, then `--sizes {sizes} --source DIR --label LABEL "
            f"--json FILE`), shown here with `--before FILE`.")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.5,2,6", help="model sizes in GiB, comma-separated")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=8192)
    ap.add_argument("--scratch", type=Path, default=None, help="folder for the models (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated models in --scratch")
    ap.add_argument("--stages", action="store_true", help="profile stage by stage in process instead")
    ap.add_argument("--quick", action="store_true", help="one ~20 MiB model (hidden 256, ffn 1024), print only")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave README.md alone")
    ap.add_argument("--json", type=Path, default=None, help="also write the runs as JSON here")
    ap.add_argument("--source", type=Path, default=ROOT, help="source tree whose onnxprune runs (default: this one)")
    ap.add_argument("--label", default="this tree", help="what --source is, in the table")
    ap.add_argument("--stop-over", type=float, default=1.5,
                    help="skip the larger sizes once a run's peak RSS exceeds this many times its model size "
                         "(the machine is shared: a 6 GiB model at 8x would not fit)")
    ap.add_argument("--before", type=Path, default=None, help="runs of older code (--json of a --source run) "
                                                             "to show beside these")
    args = ap.parse_args(argv)
    hidden, ffn = (256, 1024) if args.quick else (args.hidden, args.ffn)
    sizes = [0.02] if args.quick else [float(s) for s in args.sizes.split(",")]
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="onnxprune-llm-"))
    scratch.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    skip = False
    try:
        for gib in sizes:
            if skip:
                break
            spec = Decoder.of_size(gib, hidden=hidden, ffn=ffn)
            model = scratch / f"decoder_{gib:g}g.onnx"
            if not model.exists():
                t0 = time.perf_counter()
                write_decoder(model, spec)
                print(f"wrote {model} ({on_disk(model) / GIB:.2f} GiB, {spec.layers} layers) in "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)
            out = scratch / f"decoder_{gib:g}g.pruned.onnx"
            if args.stages:
                print(f"{model.name}: stage by stage", flush=True)
                stage_profile(model, out)
            else:
                run = measure(model, out, gib, spec.layers, source=args.source.resolve(), code=args.label)
                runs.append(run)
                print(f"{model.name}: {run.seconds:.1f} s, peak RSS {run.peak_rss / GIB:.2f} GiB "
                      f"({run.ratio:.2f}× the model), exit {run.exit_code}: {run.tail}", flush=True)
                if run.ratio > args.stop_over:
                    print(f"peak RSS over {args.stop_over}× the model: the larger sizes are skipped", flush=True)
                    skip = True
            for p in scratch.glob(out.name + "*"):
                p.unlink()
            if not args.keep:
                for p in scratch.glob(model.name + "*"):
                    p.unlink()
    finally:
        if args.scratch is None and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    if not runs:
        return 0
    before = [Run(**r) for r in json.loads(args.before.read_text())] if args.before else []
    text = table(runs + before)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1) + "\n")
    if not (args.quick or args.no_write):
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        inner = (f"Run of {time.strftime('%Y-%m-%d')} on {machine()}: "
                 f"`python benchmarks/llm_memory.py --sizes {args.sizes}{' --before FILE' if before else ''}` "
                 f"(hidden {hidden}, ffn {ffn}, fp32; "
                 f"each model pruned by `onnxprune {' '.join(prune_args(Path('MODEL'), Path('OUT')))}` in its own "
                 f"process; peak RSS is the child's ru_maxrss, file-backed mapped pages included; "
                 f"this script's own peak: {own / GIB:.2f} GiB).{_before_note(before)}\n\n{text}")
        replace_block(README, BEGIN, END, inner, "LLM-scale models in memory (`benchmarks/llm_memory.py`)")
        print(f"wrote {README}")
    return 0 if all(r.exit_code == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
