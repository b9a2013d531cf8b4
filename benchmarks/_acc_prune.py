"""onnxprune's structured pruning at a MACs target, using whatever `onnxprune.api.prune` offers.

Features are read from `inspect.signature(prune).parameters` at run time:
- `target_macs=` present: asked for directly (fraction of the dense MACs), checked afterwards
  with `onnxprune.measure.model_stats.model_stats` (a miss beyond MACS_TOL is noted in the cell);
- otherwise the uniform `ratio` is bisected until `model_stats(...).macs` is within MACS_TOL of
  the target (the closest step when channel granularity cannot get closer);
- `calibration=`, `reconstruct=` (always explicit: prune() turns it on by itself when given
  calibration data), `allocation=`: passed when present; a cell that needs a missing one is
  "n/a" with the reason.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from onnxprune.api import analyse, prune
from onnxprune.calib.source import CalibConfig
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.measure.model_stats import model_stats
from onnxprune.scoring.catalog import criteria

MAGNITUDE = ("l1", "l2", "bn-scale")
EXPECTED_CALIBRATED = ("wanda", "activation", "apoz", "flap", "sensitivity")
NOT_COMPARED = ("random",)
MACS_TOL = 0.03          # absolute, in fractions of the dense MACs
BISECT_STEPS = 14


def prune_params() -> frozenset[str]:
    """The options `prune` takes: its own parameters and the flat options of PruneConfig.create."""
    from onnxprune.config import PruneConfig

    return frozenset(inspect.signature(prune).parameters) | frozenset(inspect.signature(PruneConfig.create).parameters)


def calibrated_criteria() -> list[str]:
    """The calibrated criteria to report: the expected ones, then any other registered non-magnitude one."""
    extra = [c for c in criteria() if c not in MAGNITUDE + EXPECTED_CALIBRATED + NOT_COMPARED]
    return list(EXPECTED_CALIBRATED) + extra


def missing_features(criterion: str, *, reconstruct: bool, allocation: str) -> list[str]:
    """Why this cell cannot run on the installed onnxprune (empty: it can)."""
    params = prune_params()
    why: list[str] = []
    if criterion not in criteria():
        why.append(f"criterion {criterion!r} not registered")
    if criterion not in MAGNITUDE and "calibration" not in params:
        why.append("prune(calibration=) missing")
    if reconstruct and "reconstruct" not in params:
        why.append("prune(reconstruct=) missing")
    if allocation != "uniform" and "allocation" not in params:
        why.append("prune(allocation=) missing")
    return why


def _has_steps() -> bool:
    try:
        from onnxprune.api import prune  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Outcome:
    model: onnx.ModelProto | None
    macs_kept: float | None = None
    seconds: float = 0.0
    note: str = ""
    how: str = ""          # "target_macs" or "bisect r=0.42"


@dataclass
class StructuredPruner:
    """One model, analysed once; prunes it per (criterion, reconstruct, allocation) at MACs targets."""

    model: onnx.ModelProto
    shapes: Mapping[str, tuple[int, ...]] | None
    calibration: CalibConfig | None
    dg: DependencyGraph = field(init=False)
    dense_macs: int = field(init=False)
    _ratio_cache: dict[tuple[str, float], float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.dg = analyse(self.model, shapes=self.shapes)
        self.dense_macs = model_stats(self.model, shapes=self.shapes).macs

    def kept(self, model: onnx.ModelProto) -> float:
        return model_stats(model, shapes=self.shapes).macs / self.dense_macs

    def _kwargs(self, criterion: str, *, reconstruct: bool, allocation: str, sensitivity: Any = None,
                head_floor: float | None = None) -> dict[str, Any]:
        params = prune_params()
        kw: dict[str, Any] = {"criterion": criterion, "shapes": self.shapes, "dg": self.dg}
        if sensitivity is not None:
            kw["sensitivity"] = sensitivity
        if head_floor is not None:
            kw["head_floor"] = head_floor
        if "calibration" in params and (reconstruct or criterion not in MAGNITUDE):
            kw["calibration"] = self.calibration
        if "reconstruct" in params:
            kw["reconstruct"] = reconstruct
        if "allocation" in params:
            kw["allocation"] = allocation
        return kw

    def _run(self, kw: Mapping[str, Any]) -> onnx.ModelProto:
        return prune(self.dg.model, recipe="fast", **kw).model

    def at_macs(self, target: float, criterion: str, *, reconstruct: bool = False,
                allocation: str = "uniform", sensitivity: Any = None, head_floor: float | None = None,
                steps: int = 1) -> Outcome:
        """`sensitivity`: curves (onnxprune.measure.curves) that split the MAC budget into per-group ratios.
        `head_floor`: weighted re-fit of a final Sigmoid's logit layers (prune(head_floor=)).
        `steps`: more than 1 prunes in steps (onnxprune.api.prune with steps; curves re-measured)."""
        why = missing_features(criterion, reconstruct=reconstruct, allocation=allocation)
        if steps > 1 and not _has_steps():
            why.append("onnxprune.api.prune missing")
        if sensitivity is not None and not {"sensitivity", "target_macs"} <= prune_params():
            why.append("prune(sensitivity=, target_macs=) missing")
        if head_floor is not None and "head_floor" not in prune_params():
            why.append("prune(head_floor=) missing")
        if why:
            return Outcome(None, note="; ".join(why))
        kw = self._kwargs(criterion, reconstruct=reconstruct, allocation=allocation, sensitivity=sensitivity,
                          head_floor=head_floor)
        start = time.perf_counter()
        try:
            out = self._stepped(target, steps, kw) if steps > 1 else \
                self._direct(target, kw) if "target_macs" in prune_params() else self._bisected(target, kw)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            return Outcome(None, note=f"error: {type(exc).__name__}: {str(exc)[:80]}")
        out.seconds = time.perf_counter() - start
        return out

    def _direct(self, target: float, kw: Mapping[str, Any]) -> Outcome:
        model = self._run({**kw, "target_macs": target})
        kept = self.kept(model)
        note = "" if abs(kept - target) <= MACS_TOL else f"target_macs={target} gave {kept:.3f}"
        return Outcome(model, kept, how="target_macs", note=note)

    def _stepped(self, target: float, steps: int, kw: Mapping[str, Any]) -> Outcome:
        from onnxprune.api import prune

        res = prune(self.dg.model, recipe="fast", steps=steps, target_macs=target, **{k: v for k, v in kw.items() if k != "dg"})
        kept = self.kept(res.model)
        note = "" if abs(kept - target) <= MACS_TOL else f"target_macs={target} in {steps} steps gave {kept:.3f}"
        return Outcome(res.model, kept, how=f"{steps} steps", note=note)

    def _bisected(self, target: float, kw: Mapping[str, Any]) -> Outcome:
        if kw.get("allocation", "uniform") != "uniform":
            return Outcome(None, note="no target_macs= to steer a non-uniform allocation")
        # A uniform plan removes the same number of channels per group whatever the criterion, so
        # the ratio is bisected once with cheap l2 scores; re-bisected only if this criterion misses.
        off = {"reconstruct": False} if "reconstruct" in kw else {}
        plain = {k: v for k, v in kw.items() if k not in ("calibration", "criterion")} | off
        ratio = self.ratio_for(target, "l2", lambda r: self._run({**plain, "criterion": "l2", "ratio": r}))
        model = self._run({**kw, "ratio": ratio})
        if abs(self.kept(model) - target) > MACS_TOL and kw["criterion"] != "l2":
            scored = {**kw, **off}
            ratio = self.ratio_for(target, kw["criterion"], lambda r: self._run({**scored, "ratio": r}))
            model = self._run({**kw, "ratio": ratio})
        return Outcome(model, self.kept(model), how=f"bisect r={ratio:.3f}")

    def ratio_for(self, target: float, criterion: str, run: Callable[[float], onnx.ModelProto]) -> float:
        """The uniform ratio whose MACs kept are closest to `target` (cached per criterion)."""
        key = (criterion, target)
        if key not in self._ratio_cache:
            self._ratio_cache[key] = bisect_ratio(target, lambda r: self.kept(run(r)))
        return self._ratio_cache[key]


def bisect_ratio(target: float, kept_at: Callable[[float], float], *, steps: int = BISECT_STEPS) -> float:
    """Bisect r in [0, 0.99) on a non-increasing kept_at(r); return the best r seen."""
    lo, hi = 0.0, 0.99
    best_r, best_err = 0.0, abs(1.0 - target)
    for _ in range(steps):
        mid = (lo + hi) / 2
        kept = kept_at(mid)
        err = abs(kept - target)
        if err < best_err:
            best_r, best_err = mid, err
        if err <= MACS_TOL / 4:
            break
        lo, hi = (mid, hi) if kept > target else (lo, mid)
    return best_r
