"""Distillation's objective: the dense model as teacher (ONNX Runtime, cached), and the weighted sum
of the loss terms (`recovery.distill_targets.Term`), each relative to the size of its teacher tensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.calib.collect import expose_outputs
from onnxprune.io import runtime
from onnxprune.io.inputs import feed_rows
from onnxprune.io.types import Feed
from onnxprune.recovery.distill_data import joined
from onnxprune.recovery.distill_targets import Term

if TYPE_CHECKING:
    import torch

    from onnxprune.recovery.torch_graph import TorchGraph


class Teacher:
    """The dense model's tensors for each unit, from ONNX Runtime, kept up to `cache_bytes`."""

    def __init__(self, model: onnx.ModelProto, names: Sequence[str], cache_bytes: int) -> None:
        self.names = list(dict.fromkeys(names))
        self.session = runtime.session(expose_outputs(model, self.names))
        self.cache: dict[int, dict[str, np.ndarray]] = {}
        self.room = cache_bytes

    def __call__(self, index: int, unit: Feed) -> dict[str, np.ndarray]:
        if index in self.cache:
            return self.cache[index]
        vals = runtime.run(self.session, unit, self.names)
        size = sum(v.nbytes for v in vals.values())
        if size <= self.room:
            self.room -= size
            self.cache[index] = vals
        return vals


def _teacher_scale(term: Term, t: np.ndarray) -> float:
    """The size of the teacher's tensor a term is divided by: its mean square (MSE terms) or its mean
    entropy (KL terms), so every term is relative and the terms add up on one scale."""
    t = t.astype(np.float64)
    if term.kind == "mse":
        return float(np.mean(t * t))
    if term.kind == "bce":
        p = np.clip(t, 1e-7, 1 - 1e-7)
        return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    logp = t if term.kind == "logkl" else np.log(np.clip(t, 1e-12, None))
    return float(np.mean(-(np.exp(logp) * logp).sum(axis=term.axis)))


def _term_value(term: Term, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    if term.kind == "mse":
        return torch.mean((s - t) ** 2)
    if term.kind == "bce":  # binary KL(t || sigmoid(s)) = BCE(s, t) - H(t)
        eps = 1e-7
        tc = t.clamp(eps, 1 - eps)
        ent = -(tc * torch.log(tc) + (1 - tc) * torch.log(1 - tc))
        return torch.mean(F.binary_cross_entropy_with_logits(s, t, reduction="none") - ent)
    logt = t if term.kind == "logkl" else torch.log(t.clamp_min(1e-12))
    logs = s if term.kind == "logkl" else torch.log(s.clamp_min(1e-12))
    kl = (torch.exp(logt) * (logt - logs)).sum(dim=term.axis)
    return torch.mean(kl)


class Objective:
    """The weighted, normalised sum of the loss terms over a group of units."""

    def __init__(self, graph: TorchGraph, teacher: Teacher, terms: Sequence[Term], feature_weight: float,
                 static: bool) -> None:
        self.graph, self.teacher, self.terms, self.static = graph, teacher, list(terms), static
        n_feat = sum(1 for t in terms if t.feature)
        self.weights = np.array([feature_weight / n_feat if t.feature else 1.0 for t in terms])
        self.scale = np.ones(len(terms))
        self.wanted = list(dict.fromkeys(t.student for t in terms))

    def _targets(self, indices: Sequence[int], units: Sequence[Feed]) -> list[dict[str, np.ndarray]]:
        vals = [self.teacher(i, u) for i, u in zip(indices, units, strict=True)]
        if self.static or len(vals) == 1:
            return vals
        return [{k: np.concatenate([v[k] for v in vals]) for k in vals[0]}]

    def fit_scale(self, indices: Sequence[int], units: Sequence[Feed]) -> None:
        """Each term's teacher size over these units (floored: a constant teacher tensor counts 1e-6)."""
        sizes = np.zeros(len(self.terms))
        for i, u in zip(indices, units, strict=True):
            vals = self.teacher(i, u)
            sizes += [_teacher_scale(t, vals[t.teacher]) for t in self.terms]
        self.scale = np.maximum(sizes / len(indices), 1e-6)

    def terms_of(self, indices: Sequence[int], units: Sequence[Feed], *, backward: bool) -> np.ndarray:
        """Per-term raw values (means over the units); with `backward`, gradients of the weighted loss."""
        import torch

        feeds, targets = joined(units, self.static), self._targets(indices, units)
        total = np.zeros(len(self.terms))
        rows = sum(feed_rows(f) for f in feeds)
        for feed, target in zip(feeds, targets, strict=True):
            share = feed_rows(feed) / rows
            got = self.graph(feed, self.wanted)
            values = [_term_value(t, got[t.student], torch.from_numpy(target[t.teacher])) for t in self.terms]
            if backward:
                w = torch.from_numpy(self.weights / self.scale * share)
                (torch.stack(values).double() @ w).backward()
            total += share * np.array([float(v.detach()) for v in values])
        return total

    def loss(self, raw: np.ndarray) -> float:
        """The held-out criterion: the output terms only (the features guide training, the outputs are the product)."""
        outputs = np.array([0.0 if t.feature else 1.0 for t in self.terms])
        return float(raw / self.scale @ (self.weights * outputs))
