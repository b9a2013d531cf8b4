"""Budgets of a run in K steps: the fraction of the original kept after each step, and each step's own budget.

Schedules (the fraction of the original kept after step k of K, for a final fraction F):

* geometric (default): F^(k/K) — every step removes the same *share of what is left*;
* linear: 1 − (1 − F)·k/K — every step removes the same *amount of the original*.

F is the MAC or parameter target, or 1 − ratio for a ratio (channels). Each step's budget is taken
against what the steps before it actually kept (measured), so one step's rounding is made up by the
next (pipeline/schedule.py runs the steps).
"""

from __future__ import annotations

from onnxprune.errors import OnnxPruneError
from onnxprune.planning.budget import Budget

SCHEDULES = ("geometric", "linear")


def kept_fractions(final: float, steps: int, kind: str = "geometric") -> list[float]:
    """The fraction of the original kept after each of `steps` steps (the last one is `final`)."""
    if steps < 1:
        raise OnnxPruneError(f"--steps must be at least 1, got {steps}")
    if not 0.0 < final <= 1.0:
        raise OnnxPruneError(f"the final kept fraction must be in (0, 1], got {final}")
    if kind == "geometric":
        return [final ** (k / steps) for k in range(1, steps + 1)]
    if kind == "linear":
        return [1.0 - (1.0 - final) * k / steps for k in range(1, steps + 1)]
    raise OnnxPruneError(f"unknown schedule {kind!r}; choose one of: {', '.join(SCHEDULES)}")


def final_kept(budget: Budget) -> float:
    """The fraction of the original the whole run keeps: MACs / params, or channels for a ratio."""
    return 1.0 - budget.value if budget.kind == "ratio" else budget.value


def step_budget(budget: Budget, keep_now: float, achieved: float) -> Budget:
    """One step's budget: a ratio for channels, else a fraction of the current model; `achieved` is
    what the steps before kept (measured), so one step's rounding is made up by the next."""
    if budget.kind == "ratio":
        return Budget("ratio", max(0.0, 1.0 - keep_now / max(achieved, 1e-9)))
    return Budget(budget.kind, min(1.0, keep_now / max(achieved, 1e-9)))
