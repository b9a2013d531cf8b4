"""The pruned model keeps ONNX Runtime's graph optimisations: NCHWc convolutions and folded shape chains.

ONNX Runtime's optimised graph (ORT_ENABLE_ALL, written with `optimized_model_filepath`) is the
structure latency depends on. The properties checked do not depend on the NCHWc block: ORT on this
machine uses its own block (`machine_block`, read from ORT itself), while the multiple onnxprune
rounds to follows the forced CPU profile (`cpu_profile`), so the two may differ:

* every Conv ORT runs in NCHWc in the dense model still does in the pruned one wherever its pruned
  channel counts fit the block (`aligned`, ORT's conditions), and where onnxprune rounds to a
  multiple of the machine's block, every one of them does;
* the shape-chain ops ORT folded in the dense graph stay folded (none of them grows in number).
"""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from graphs import Graph
from zoo import zoo_entries

from onnxprune.api import prune
from onnxprune.planning.cpu_profile import CPUINFO, ort_cpu_profile
from onnxprune.planning.rounding import resolve_round_to

NCHWC = "com.microsoft.nchwc"
SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Slice", "ConstantOfShape", "Cast", "Range", "Expand",
             "Reshape", "Size")


def optimised(model: onnx.ModelProto, folder: Path, tag: str, *,
              level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> onnx.ModelProto:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.optimized_model_filepath = str(folder / f"{tag}.onnx")
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return onnx.load(folder / f"{tag}.onnx")


def machine_block(folder: Path) -> int:
    """ORT's NCHWc block on this machine: a 1-output Conv's weight is padded up to it (1: no NCHWc)."""
    g = Graph(opset=17)
    g.output(g.conv(g.input("x", (1, 3, 8, 8)), 3, 1, name="probe"))
    opt = optimised(g.build(), folder, "probe")
    convs = [n for n in opt.graph.node if n.op_type == "Conv" and n.domain == NCHWC]
    if not convs:
        return 1
    return int(next(t.dims[0] for t in opt.graph.initializer if t.name == convs[0].input[1]))


def aligned(model: onnx.ModelProto, block: int) -> set[str]:
    """Convs whose channel counts satisfy ORT's NCHWc conditions for `block` (nchwc_transformer.cc:
    group 1: input channels below the block or a multiple of it; grouped: output channels and both
    per-group counts multiples of it, or depthwise with output channels a multiple of it). Newer ORT
    versions take some other convs too (after an NCHWc Concat), so this is sufficient, not necessary."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    out: set[str] = set()
    for n in model.graph.node:
        w = weights.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        if w is None or len(w) != 4:
            continue
        group = next((int(a.i) for a in n.attribute if a.name == "group"), 1)
        cout, cin = w[0], w[1]
        if group == 1:
            ok = cin < block or cin % block == 0
        else:
            ok = cout % block == 0 and (cin == 1 and cout == group or cin % block == 0 and cout // group % block == 0)
        if ok:
            out.add(n.name)
    return out


def nchwc_convs(model: onnx.ModelProto, folder: Path) -> set[str]:
    """The Convs (by node name) ORT runs in NCHWc: its NCHWc node is named after the Conv's output."""
    basic = optimised(model, folder, "basic", level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    by_output = {n.output[0]: n.name for n in basic.graph.node if n.op_type == "Conv"}
    full = optimised(model, folder, "full")
    return {by_output[n.name.split("_nchwc")[0]] for n in full.graph.node
            if n.op_type == "Conv" and n.domain == NCHWC and n.name.split("_nchwc")[0] in by_output}


def shape_ops(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node if n.op_type in SHAPE_OPS)


def test_the_cpu_profile_is_the_block_ort_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unforced, `--round-to auto` reads /proc/cpuinfo: it must name the block ORT really uses here."""
    if not CPUINFO.is_file():
        pytest.skip(f"no {CPUINFO} on this machine")
    assert ort_cpu_profile(cpuinfo=CPUINFO).block == machine_block(tmp_path)


def test_value_info_carries_the_pruned_shapes() -> None:
    g = Graph(opset=17)
    x = g.input("x", ("batch", 4, "h", "w"))
    y = g.relu(g.conv(x, 4, 8, name="a"))
    g.output(g.conv(y, 8, 4, name="b"))
    r = prune(g.build(), ratio=0.5)
    vi = {v.name: v.type.tensor_type.shape.dim for v in r.model.graph.value_info}
    a_out = next(n.output[0] for n in r.model.graph.node if n.name == "a")
    assert a_out in vi, sorted(vi)
    assert vi[a_out][1].dim_value == 4


@pytest.mark.parametrize("name", ["real_yolov8n", "yolov8_ts"])
def test_pruned_yolo_keeps_ort_optimisations(name: str, tmp_path: Path, cpu_profile: str) -> None:
    entry = next((e for e in zoo_entries() if e.name == name), None)
    if entry is None:
        pytest.skip(f"{name} not available (make models)")
    dense = onnx.load(entry.path)
    multiple, block = resolve_round_to("auto"), machine_block(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = prune(dense, target_macs=0.5, round_to=multiple, shapes=entry.shapes).model
    nd, np_ = nchwc_convs(dense, tmp_path), nchwc_convs(pruned, tmp_path)
    assert len(nd) == sum(n.op_type == "Conv" for n in dense.graph.node) or block == 1  # the dense yolos: all
    # Every Conv ORT runs in NCHWc in the dense model still does where its pruned channels fit the block;
    # with whole blocks of this machine (or no NCHWc here) that is every one of them.
    assert nd & aligned(pruned, block) <= np_, sorted(nd & aligned(pruned, block) - np_)
    if multiple % block == 0:
        assert nd <= np_, sorted(nd - np_)
    # The shape chains ORT folded in the dense graph stay folded.
    d, p = optimised(dense, tmp_path, "dense"), optimised(pruned, tmp_path, "pruned")
    assert all(v <= shape_ops(d)[k] for k, v in shape_ops(p).items()), (shape_ops(d), shape_ops(p))
