"""`onnxprune build-engine MODEL -o model.plan`: build a TensorRT engine (on the target device)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from onnxprune.deploy.tensorrt.build_options import (
    BuildOptions,
    check_shape_ranges,
    model_precision,
    parse_shape_ranges,
    parse_version,
)
from onnxprune.deploy.tensorrt.engine import EngineReport, build_engine, dense_plan_path, require_tensorrt
from onnxprune.deploy.tensorrt.trtexec import DEFAULT_TRT_VERSION, format_command, trtexec_command
from onnxprune.errors import OnnxPruneError
from onnxprune.io.model_io import check_paths, load_model, write_json


def _emit_trtexec(model: str, output: str, options: BuildOptions, trt_version: str | None) -> None:
    if trt_version:
        version = parse_version(trt_version, what="--trt-version")
    else:
        try:
            version = parse_version(require_tensorrt())
        except OnnxPruneError:
            version = DEFAULT_TRT_VERSION
    proto = load_model(model, load_external_data=False)
    check_shape_ranges(proto, options.shapes)
    precision = model_precision(proto)
    click.echo(format_command(trtexec_command(model, output, options=options, version=version, precision=precision)))


def _render(report: EngineReport) -> None:
    con = Console()
    t = Table(title=f"{report.plan_path} (TensorRT {report.tensorrt_version})")
    for col in ("layer", "type", "sparse weights", "sparse tactic", "tactic"):
        t.add_column(col, overflow="fold")
    for layer in report.layers:
        if layer.sparse_weights or layer.sparse_tactic or layer.layer_type in ("Convolution", "MatrixMultiply",
                                                                                "CaskConvolution", "CaskGemm"):
            t.add_row(layer.name, layer.layer_type, "yes" if layer.sparse_weights else "no",
                      "[green]yes[/]" if layer.sparse_tactic else "no", layer.tactic)
    con.print(t)
    for note in report.plan.notes:
        con.print(f"note: {note}")
    if report.speedup is not None:
        con.print(f"sparse {report.latency_ms:.3f} ms vs dense {report.dense_latency_ms:.3f} ms: "
                  f"speedup x{report.speedup:.2f}")
    if report.ort_max_abs_diff is not None:
        con.print(f"max |ORT - TensorRT| = {report.ort_max_abs_diff:.3g}")


@click.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Engine (plan) file to write.")
@click.option("--sparse", is_flag=True, help="Let TensorRT use sparse tensor-core kernels for 2:4 weights.")
@click.option("--fp16", is_flag=True, help="FP16 kernels (TensorRT 11: the model must already be FP16).")
@click.option("--int8", is_flag=True, help="INT8 kernels; the model must carry Q/DQ nodes.")
@click.option("--shapes", "shapes", multiple=True, metavar="NAME:MIN/OPT/MAX",
              help="Optimization profile for a dynamic input, e.g. input:1x3x224x224/8x3x224x224/16x3x224x224.")
@click.option("--workspace", type=click.IntRange(min=1), default=None, metavar="MIB", help="Workspace pool limit (MiB).")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None, help="Timing cache file to read and update.")
@click.option("--dla-core", type=click.IntRange(min=0), default=None, help="Build for this DLA core (Jetson).")
@click.option("--gpu-fallback", is_flag=True, help="With --dla-core: run layers the DLA cannot run on the GPU.")
@click.option("--dense-twin", is_flag=True, help="Also build a dense engine and report the measured sparse speedup.")
@click.option("--compare", is_flag=True, help="Compare engine outputs with ONNX Runtime on random inputs.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the build report as JSON.")
@click.option("--emit-trtexec", is_flag=True, help="Only print the equivalent trtexec command and exit.")
@click.option("--trt-version", default=None, metavar="X.Y",
              help="TensorRT version for --emit-trtexec (default: the installed one, else 10.3).")
def command(model: str, output: str, sparse: bool, fp16: bool, int8: bool, shapes: tuple[str, ...],
            workspace: int | None, timing_cache: str | None, dla_core: int | None, gpu_fallback: bool,
            dense_twin: bool, compare: bool, json_out: str | None, emit_trtexec: bool,
            trt_version: str | None) -> None:
    """Build a TensorRT engine from MODEL. Build it on the device that will run it."""
    ranges = parse_shape_ranges(shapes)
    if gpu_fallback and dla_core is None:
        raise OnnxPruneError("--gpu-fallback only applies with --dla-core")
    # With --emit-trtexec the paths are for the machine that runs trtexec: compared, not probed.
    check_paths(models={"MODEL": model},
                outputs={"-o": output, "--json": json_out, "--timing-cache": timing_cache,
                         "the dense twin": dense_plan_path(output) if dense_twin else None},
                writable=not emit_trtexec)
    options = BuildOptions(sparse=sparse, fp16=fp16, int8=int8, shapes=ranges, workspace_mib=workspace,
                           timing_cache=timing_cache, dla_core=dla_core, gpu_fallback=gpu_fallback)
    if emit_trtexec:
        _emit_trtexec(model, output, options, trt_version)
        return
    require_tensorrt()  # one-line install hint before any work
    report = build_engine(model, output, sparse=sparse, fp16=fp16, int8=int8, shapes=ranges, workspace=workspace,
                          timing_cache=timing_cache, dla_core=dla_core, gpu_fallback=gpu_fallback,
                          dense_twin=dense_twin, compare=compare)
    _render(report)
    if json_out:
        write_json(json_out, report.to_dict())
