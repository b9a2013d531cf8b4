"""The recipe: which criterion, allocation, steps and re-fit weighting a run uses when the caller did
not say, chosen once before the pipeline runs.

With the user's data and a MAC or parameter budget, the "quality" recipe fills every knob the caller
left unset with what measured best over our real and trained models (benchmarks/recipes.py, table
in benchmarks/README.md):

    criterion   obs: greedy structured OBS, the channels whose loss the re-fit absorbs best
    allocation  curves: each group's share of the budget from its measured sensitivity curve
    head_floor  the re-fit weighs a final Sigmoid's rows by its slope (recovery/heads.py)
    steps       two when the budget keeps less than STEPS_BELOW and the layers are re-fitted

Without real data there is nothing to measure, so the run takes the quick path (magnitude order,
uniform allocation), and says why; `recipe="fast"` (`--fast`) asks for it. A knob the caller set
(`RecipeOptions.given`) is never changed. Where the data cannot support a part of the recipe (too
few samples for the curves, layers so wide that obs's Grams would not fit in OBS_GRAM_LIMIT), that part
falls back, and the fallback is named in the output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from onnxprune.config import KNOBS, PruneConfig

FAST = {"criterion": "l2", "allocation": "uniform", "steps": 1}  # the quick path
QUALITY_CRITERION = "obs"
LEAN_CRITERION = "wanda"  # activation-aware too, without obs's Grams: where those would not fit
OBS_GRAM_LIMIT = 2 << 30  # bytes of obs's Grams and inverses (ResNet-50 ≈ 1.8 GB; a 2048x8192 MLP stack beyond)
HEAD_FLOOR = 0.01  # recovery/heads.py DEFAULT_FLOOR: background rows stay in the fit
CURVE_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # higher ratios strip groups bare (YOLOv8n)
CURVE_SAMPLES = 16
MIN_CURVE_SAMPLES = 8  # fewer make the per-group errors noise
STEPS_BELOW = 0.6  # a budget keeping less than this goes in two steps (they paid at 0.5x, not at 0.7x)


@dataclass(frozen=True)
class Recipe:
    """What a run used and why: the knobs the recipe set, and the parts that fell back."""

    name: str  # "quality", "fast" or "given" (the caller set every knob)
    why: str
    chosen: dict[str, object] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()

    def describe(self) -> str:
        knobs = ", ".join(f"{k} {v}" for k, v in self.chosen.items())
        line = f"recipe: {self.name}" + (f" ({knobs})" if knobs else "") + f": {self.why}"
        return line + "".join(f"; {f}" for f in self.fallbacks)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "why": self.why, "chosen": dict(self.chosen), "fallbacks": list(self.fallbacks)}


def choose_recipe(config: PruneConfig, *, samples: int, obs_bytes: int = 0) -> tuple[PruneConfig, Recipe]:
    """The config with the recipe's knobs filled in (see the module doc), and what was chosen.
    samples: how many calibration samples the data holds (up to CURVE_SAMPLES are counted);
    obs_bytes: the memory obs would hold on this model (`scoring.obs.gram_bytes`)."""
    given = set(config.recipe.given)
    open_knobs = [k for k in KNOBS if k not in given]
    if config.recipe.name == "fast":
        return _apply(config, _fast(config, open_knobs), "fast", "--fast asked for it")
    if not open_knobs:
        return _apply(config, {}, "given", "every knob was set")
    if not config.real_data:
        return _apply(config, _fast(config, open_knobs), "fast",
                      "no calibration data (--calib): random inputs carry nothing to measure")
    budget = config.budget
    chosen: dict[str, object] = {}
    fallbacks: list[str] = []
    if "criterion" in open_knobs:
        chosen["criterion"] = QUALITY_CRITERION
        if obs_bytes > OBS_GRAM_LIMIT:
            chosen["criterion"] = LEAN_CRITERION
            fallbacks.append(f"criterion {LEAN_CRITERION}: obs would hold {obs_bytes / 2**30:.1f} GiB of layer Grams "
                             f"(limit {OBS_GRAM_LIMIT / 2**30:g} GiB)")
    if "head_floor" in open_knobs:
        chosen["head_floor"] = HEAD_FLOOR
    if "allocation" in open_knobs:
        if config.scoring.sensitivity is not None:
            chosen["allocation"] = "curves"
        elif budget.kind not in ("macs", "params"):
            chosen["allocation"] = "uniform"
            fallbacks.append("allocation uniform: curves allocate a --target-macs/--target-params budget")
        elif samples < MIN_CURVE_SAMPLES:
            chosen["allocation"] = "uniform"
            fallbacks.append(f"allocation uniform: the curves need {MIN_CURVE_SAMPLES} calibration samples, "
                             f"the data has {samples}")
        else:
            chosen["allocation"] = "curves"
    if "steps" in open_knobs:
        chosen["steps"] = _steps(config, fallbacks)
    why = "calibration data and a " + ("MAC" if budget.kind == "macs" else budget.kind) + " budget were given" \
        if budget.is_target else "calibration data was given"
    return _apply(config, chosen, "quality", why + " (--fast: the quick path)", fallbacks)


def _fast(config: PruneConfig, open_knobs: list[str]) -> dict[str, object]:
    fast = {k: v for k, v in FAST.items() if k in open_knobs}
    if "allocation" in fast and config.scoring.sensitivity is not None:
        fast["allocation"] = "curves"  # a curves file given allocates, whatever the path
    return fast


def _steps(config: PruneConfig, fallbacks: list[str]) -> int:
    budget = config.budget
    if budget.kind not in ("macs", "params") or budget.value >= STEPS_BELOW or not config.reconstructs:
        return 1  # a step pays through the re-fit: the next one scores a re-fitted model
    for reason, blocked in (("--distill", config.recovery.distill is not None),
                            ("--drop-blocks", bool(config.depth.blocks))):
        if blocked:
            fallbacks.append(f"one step: {reason} runs in one")
            return 1
    return 2


def _apply(config: PruneConfig, chosen: dict[str, object], name: str, why: str,
           fallbacks: list[str] | None = None) -> tuple[PruneConfig, Recipe]:
    s, r, st = config.scoring, config.recovery, config.steps
    steps = chosen.get("steps", st.steps)
    resolved = dataclasses.replace(
        config,
        scoring=dataclasses.replace(s, criterion=str(chosen.get("criterion", s.criterion)),
                                    allocation=str(chosen.get("allocation", s.allocation))),
        recovery=dataclasses.replace(r, head_floor=HEAD_FLOOR if "head_floor" in chosen else r.head_floor),
        steps=dataclasses.replace(st, steps=steps if isinstance(steps, int) else st.steps),
        recipe=dataclasses.replace(config.recipe, given=frozenset(KNOBS)),  # resolved: a second pass changes nothing
    )
    return resolved.validate(), Recipe(name, why, chosen, tuple(fallbacks or ()))
