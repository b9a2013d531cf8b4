"""The trtexec command line equivalent to `build-engine`, for machines where you would rather use trtexec.

Flag spellings follow trtexec's help for 8.6-11.x: `--memPoolSize=workspace:<N>M` replaced
`--workspace` (removed in 10.0); `--sparsity=enable|force`; `--minShapes/--optShapes/--maxShapes`
as `name:1x3x224x224[,name2:...]`; `--timingCacheFile`; `--useDLACore`; `--allowGPUFallback`.
TensorRT 11 removed `--fp16`/`--int8` (networks are always strongly typed), so for 11.x the
command carries `--stronglyTyped` (accepted, and the default there) and the precision must already
be in the model.
"""

from __future__ import annotations

import os
import shlex

from onnxprune.deploy.tensorrt.build_options import BuildOptions, ModelPrecision, Shape, plan_build

DEFAULT_TRT_VERSION = (10, 3)  # JetPack 6.1/6.2


def _name(name: str) -> str:
    # trtexec splits on ':' and ','; names holding them are wrapped in single quotes.
    return f"'{name}'" if (":" in name or "," in name) else name


def _shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_command(onnx_path: str | os.PathLike[str], plan_path: str | os.PathLike[str], *,
                    options: BuildOptions | None = None, version: tuple[int, int] = DEFAULT_TRT_VERSION,
                    precision: ModelPrecision | None = None, verbose: bool = False,
                    exe: str = "trtexec") -> list[str]:
    """trtexec argv building the same engine as `build_engine` with these options on that TensorRT version."""
    opts = options or BuildOptions()
    plan = plan_build(version, opts, precision or ModelPrecision(has_fp16=opts.fp16, has_qdq=opts.int8))
    cmd = [exe, f"--onnx={os.fspath(onnx_path)}", f"--saveEngine={os.fspath(plan_path)}"]
    if opts.force_sparsity:
        cmd.append("--sparsity=force")
    elif opts.sparse:
        cmd.append("--sparsity=enable")
    if plan.strongly_typed:
        cmd.append("--stronglyTyped")
    else:
        if "FP16" in plan.builder_flags:
            cmd.append("--fp16")
        if "INT8" in plan.builder_flags:
            cmd.append("--int8")
    if opts.shapes:
        for flag, pick in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            items = [f"{_name(n)}:{_shape((r.min, r.opt, r.max)[pick])}" for n, r in opts.shapes.items()]
            cmd.append(f"{flag}={','.join(items)}")
    if opts.workspace_mib is not None:
        cmd.append(f"--memPoolSize=workspace:{opts.workspace_mib}M")
    if opts.timing_cache:
        cmd.append(f"--timingCacheFile={opts.timing_cache}")
    if opts.dla_core is not None:
        cmd.append(f"--useDLACore={opts.dla_core}")
        if opts.gpu_fallback:
            cmd.append("--allowGPUFallback")
    cmd.append("--profilingVerbosity=detailed")
    if verbose:
        cmd.append("--verbose")
    return cmd


def format_command(cmd: list[str]) -> str:
    return shlex.join(cmd)
