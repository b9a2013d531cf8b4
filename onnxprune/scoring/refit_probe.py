"""Re-fitted consumers for masked probes: the error a removal leaves *after* least-squares recovery.

A zero- or mean-filled probe (scoring.mask_probe) charges a group for errors that reconstruction
then removes: a channel that another channel predicts well costs little once its consumers are
re-fitted, however large its own contribution. `Compensator` gives, for a removal set of one group,
every re-fittable consumer's re-fitted weights, computed by the structured OBS update of
scoring.surgeon on the held feeds' input Grams:

    W' = W − W_S (H⁻¹_SS)⁻¹ H⁻¹_S:        b' = b + (W − W')·mean(x)

(H centred when the layer has a bias, which then absorbs the mean shift), i.e. the ridge re-fit
that `passes.reconstruct` performs, up to its damping and to the upstream changes it also sees.
The probe feeds them through its `overrides`. Consumers that cannot be re-fitted (scoring.obs:
`fit_nodes`), or whose weight or bias constant is shared with other nodes, are only masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxprune.calib.collect import DEFAULT_MAX_ROWS
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.io.types import Feed
from onnxprune.recovery.layer_weights import LayerWeights, layer_arrays
from onnxprune.scoring.obs import (
    DEFAULT_DAMP,
    ConsumerSurgeon,
    collect_grams,
    consumer_surgeons,
    fit_nodes,
    read_fit_layer,
)

Weights = dict[str, np.ndarray]


class Compensator:
    """Re-fitted consumer weights of one group's removal sets, as initializer values by name."""

    def __init__(self, dg: DependencyGraph, feeds: Sequence[Feed], *, damp: float = DEFAULT_DAMP,
                 max_rows: int | None = DEFAULT_MAX_ROWS) -> None:
        self.dg, self.damp = dg, damp
        self.nodes = fit_nodes(dg)
        self.grams = collect_grams(dg, self.nodes.values(), lambda: iter(feeds), max_rows=max_rows)
        inits = {t.name: t for t in dg.model.graph.initializer}
        names: dict[str, None] = {}  # what the probe must let a feed replace
        for node in self.nodes.values():
            arrays = layer_arrays(dg.model, node, *read_fit_layer(dg.model, node, inits))
            names.update(dict.fromkeys(arrays or {}))
        self.initializers = list(names)
        self._names = set(names)

    def schedule(self, group: Group, order: np.ndarray, counts: Sequence[int]) -> dict[int, Weights]:
        """For each count n: the consumer weights once the first n slots of `order` are removed."""
        parts = consumer_surgeons(self.dg, group, self.grams, self.nodes, damp=self.damp)
        out: dict[int, Weights] = {}
        done = 0
        for n in sorted(set(counts)):
            if n > done:
                take = np.asarray(order[done:n])
                for c in parts:
                    c.surgeon.remove(take)
                done = n
            out[n] = self._arrays(parts) if n else {}
        return out

    def _arrays(self, parts: list[ConsumerSurgeon]) -> Weights:
        by_node: dict[str, list[ConsumerSurgeon]] = {}
        for c in parts:
            by_node.setdefault(c.node.name, []).append(c)
        out: Weights = {}
        for cs in by_node.values():
            if len({c.index for c in cs}) != len(cs):  # one node reading the group twice: not modelled
                continue
            arrays = layer_arrays(self.dg.model, cs[0].node, _refitted(cs), cs[0].bias_add)
            if arrays is not None and self._names.issuperset(arrays):
                out.update(arrays)
        return out


def _refitted(parts: list[ConsumerSurgeon]) -> LayerWeights:
    """The node's layer with the surgeons' weights in their conv groups, and the biases moved with them."""
    base = parts[0].layer
    weights, biases = list(base.weights), [b.copy() for b in base.biases]
    for c in parts:
        weights[c.index] = c.surgeon.weight
        if c.mean is not None:
            biases[c.index] = base.biases[c.index] + (base.weights[c.index] - c.surgeon.weight) @ c.mean
    return LayerWeights(weights, biases, base.has_bias)
