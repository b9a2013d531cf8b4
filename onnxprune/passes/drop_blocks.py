"""Drop residual blocks (graph/blocks.py): each branch f of `Add(x, f(x))` is replaced by nothing (the
Add becomes x: "identity") or by a constant (f's calibration mean per channel: "mean"), and the nodes
and initializers only the branch used are removed. The result is approximate by nature (the oracle
does not cover it); its fidelity is measured on calibration data (pipeline/depth.py).
Which blocks and fills a plan names: planning/depth.py.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import InternalError
from onnxprune.graph.blocks import Block, compatible
from onnxprune.passes.base import Pass, PassResult
from onnxprune.passes.normalize import RemoveUnused


def mean_name(block: Block) -> str:
    return f"{block.name}__block_mean"


class DropBlocks(Pass):
    """`fills[block.name]`: the constant that replaces the branch (None: identity), shaped to broadcast
    against the Add's output (e.g. [1, C, 1, 1] or [1, 1, H])."""

    name = "drop-blocks"

    def __init__(self, blocks: Sequence[Block], *, fills: Mapping[str, np.ndarray | None]) -> None:
        if not compatible(blocks):
            raise InternalError("drop-blocks: overlapping blocks cannot be dropped together")
        self.blocks = list(blocks)
        self.fills = dict(fills)

    def call(self, model: onnx.ModelProto) -> PassResult:
        m = copy.deepcopy(model)
        g = m.graph
        if not self.blocks:
            return PassResult(m, False)
        by_name = {n.name: n for n in g.node}
        gone: set[str] = set()
        alias: dict[str, str] = {}  # identity: the Add's output is its input x
        for b in self.blocks:
            add = by_name.get(b.name)
            if add is None or b.branch not in add.input:
                raise InternalError(f"drop-blocks: {b.name} is not the Add of this block in the model")
            gone.update(b.nodes)
            value = self.fills.get(b.name)
            if value is None:
                alias[b.output] = b.fork
                gone.add(b.name)
                continue
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), mean_name(b)))
            add.input[list(add.input).index(b.branch)] = mean_name(b)

        def resolve(t: str) -> str:
            while t in alias:
                t = alias[t]
            return t

        keep = [n for n in g.node if n.name not in gone]
        for n in keep:
            for i, t in enumerate(n.input):
                n.input[i] = resolve(t) if t else t
        outputs = {o.name for o in g.output}
        for out in (o for o in alias if o in outputs):  # a graph output keeps its name
            keep.append(helper.make_node("Identity", [resolve(out)], [out], name=f"{out}__block_identity"))
        del g.node[:]
        g.node.extend(keep)
        RemoveUnused().call(m)
        kinds = {"identity" if self.fills.get(b.name) is None else "mean" for b in self.blocks}
        return PassResult(m, True, [f"{len(self.blocks)} residual blocks dropped ({', '.join(sorted(kinds))} fill)"])


def changed_tensors(blocks: Sequence[Block], fills: Mapping[str, np.ndarray | None]) -> list[str]:
    """The tensors of the dropped model whose values differ from the dense model's: a mean-filled
    block's output, or the input an identity-filled block's readers now read."""
    alias = {b.output: b.fork for b in blocks if fills.get(b.name) is None}
    out = []
    for b in blocks:
        t = b.output
        while t in alias:
            t = alias[t]
        out.append(t)
    return list(dict.fromkeys(out))
