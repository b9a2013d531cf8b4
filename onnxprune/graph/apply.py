"""What an apply hook sees while a plan is carried out: which ids are kept, and how to rewrite."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.graph.tracks import map_roots, planes
from onnxprune.io.external import new_tensor, tensor_array


class ApplyContext:
    """Keep-masks for id arrays, and copy-on-write rewrites of a node's constant inputs."""

    def __init__(self, model: onnx.ModelProto, roots: np.ndarray, removed_roots: set[int]) -> None:
        self.model = model
        self.roots = roots
        self.removed = np.array(sorted(removed_roots), dtype=np.int64)
        self._inits = {t.name: t for t in model.graph.initializer}
        self._counter = 0
        self.model_opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)

    def keep(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask, True where the position survives (untracked positions always do)."""
        r = map_roots(self.roots, ids)
        return np.asarray(~np.isin(r, self.removed) | (ids < 0), dtype=bool)

    def kept_count(self, ids: np.ndarray) -> int:
        return int(self.keep(ids).sum())

    def kept_along(self, ids: np.ndarray, axis: int) -> np.ndarray:
        """For a multi-axis id grid made rectangular by coupling: keep-mask along one of its axes.

        An index survives if any position on its line does: the coupled (outer) axes never lose
        a line, and on the pruned axis a whole line goes at once.
        """
        return np.asarray(planes(self.keep(ids), axis).any(axis=1), dtype=bool)

    def is_const(self, name: str) -> bool:
        return name in self._inits

    def const(self, name: str) -> np.ndarray:
        """The values of initializer `name` (read-only and memory-mapped when it stays on disk)."""
        return tensor_array(self._inits[name])

    def add_const(self, base: str, value: np.ndarray) -> str:
        """A new initializer holding `value`, named after `base` (never an existing name); its name."""
        self._counter += 1
        name = f"{base}__pruned{self._counter}"
        while name in self._inits:
            self._counter += 1
            name = f"{base}__pruned{self._counter}"
        t = new_tensor(self.model, value, name)  # a model whose weights stay on disk gets it in scratch data
        self.model.graph.initializer.append(t)
        self._inits[name] = t
        return name

    def set_input_const(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        """Point a node input at a new initializer holding `value` (never edits a shared constant)."""
        base = node.input[index] if index < len(node.input) and node.input[index] else f"{node.name}_in{index}"
        name = self.add_const(base, value)
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = name

    def insert_before(self, node: onnx.NodeProto, new: onnx.NodeProto) -> None:
        """Add `new` right before `node` (the node list stays topologically sorted), renamed if its name
        is taken: a second prune of the same graph (`--steps`) inserts before the same node again."""
        nodes = self.model.graph.node
        taken = {n.name for n in nodes}
        base, k = new.name, 1
        while new.name in taken:
            k += 1
            new.name = f"{base}_{k}"
        at = next(i for i, n in enumerate(nodes) if n.name == node.name)
        nodes.insert(at, new)

    def set_attr(self, node: onnx.NodeProto, name: str, value: object) -> None:
        for i, a in enumerate(node.attribute):
            if a.name == name:
                del node.attribute[i]
                break
        node.attribute.append(onnx.helper.make_attribute(name, value))

    def drop_attr(self, node: onnx.NodeProto, name: str) -> None:
        for i, a in enumerate(node.attribute):
            if a.name == name:
                del node.attribute[i]
                return
