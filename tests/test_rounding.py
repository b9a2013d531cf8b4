"""`--ratio R` removes R of the prunable channels, or as near as whole blocks allow, on every CPU profile
(onnxprune/planning/rounding.py): each group is rounded to its nearest block, what is left is spread over the
groups that can take it, and a run that removes nothing says why (exit 3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph, group_of

from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.errors import NothingToPruneError
from onnxprune.measure.curves import removal_counts, sensitivity_curves
from onnxprune.planning.global_rank import global_plan
from onnxprune.planning.plan import removed_channels
from onnxprune.planning.rounding import Quota, n_keep, ratio_counts, resolve_round_to, round_counts
from onnxprune.scoring.catalog import score_groups

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "models" / "zoo" / "resnet_ts.onnx"  # groups of 16, 16, 32, 32, 64, 16, 16, 16, 16 channels
RESNET_SIZES = (16, 16, 32, 32, 64, 16, 16, 16, 16)


def _quotas(sizes: tuple[int, ...], multiple: int, width: int = 1) -> dict[int, Quota]:
    return {i: Quota(s, multiple, width, n_keep(s, 0.9, multiple)) for i, s in enumerate(sizes)}


def _asked(sizes: tuple[int, ...], ratio: float) -> dict[int, float]:
    return {i: s - n_keep(s, ratio, 1) for i, s in enumerate(sizes)}


def test_a_group_rounds_to_its_nearest_block() -> None:
    assert Quota(32, 16).kept_options() == [16, 32] and Quota(24, 16).kept_options() == [16, 24]
    assert Quota(32, 16).nearest(9.6) == 16  # keeps 22.4: 16 is nearer than 32 (rounding up removed nothing)
    assert Quota(32, 8).nearest(12) == 8  # keeps 20: 16 and 24 tie, a tie keeps more
    assert Quota(16, 16).nearest(15) == 0 and not Quota(16, 16).can_shrink()  # one block is the fewest kept
    assert Quota(10, 1).nearest(3) == 3  # exact counts: the ask itself


def test_the_rest_is_spread_over_the_groups_that_can_take_it() -> None:
    """resnet_ts at R=0.3 and blocks of 16: 67 channels asked. Each group alone: 16 from each 32-group
    and from the 64-group (48 in all); the 16-groups cannot shrink, so one more block comes from the
    widest group that still asks for channels: 64 removed, nearer 67 than 48 or 80."""
    counts = round_counts(_quotas(RESNET_SIZES, 16), _asked(RESNET_SIZES, 0.3))
    assert counts == {0: 0, 1: 0, 2: 16, 3: 16, 4: 32, 5: 0, 6: 0, 7: 0, 8: 0}
    eight = round_counts(_quotas(RESNET_SIZES, 8), _asked(RESNET_SIZES, 0.3))
    assert sum(eight.values()) == 64 and all(n % 8 == 0 for n in eight.values())  # 72 by groups, one block back
    exact = round_counts(_quotas(RESNET_SIZES, 1), _asked(RESNET_SIZES, 0.3))
    assert exact == {i: math.floor(s * 0.3) for i, s in enumerate(RESNET_SIZES)}  # round-to 1: as before


def test_spreading_counts_channels_and_stops_at_the_floor() -> None:
    # 6 channels asked of a 32-group in blocks of 16 (it keeps 32: nearer 26 than 16); the other group's
    # slots hold 4 channels each: one of them brings the total to 4, nearer 6 than 0 or 8
    wide = round_counts({0: Quota(8, 1, 4), 1: Quota(32, 16, 1, 16)}, {0: 0.0, 1: 6.0})
    assert wide == {0: 1, 1: 0}
    # only one group can shrink, down to its floor (one block): the rest of the ask cannot be placed
    counts = round_counts({0: Quota(16, 16), 1: Quota(64, 16, 1, 16)}, {0: 8.0, 1: 60.0})
    assert counts == {0: 0, 1: 48}
    # too many removed by each group's own rounding: blocks go back to those that asked least
    back = round_counts(_quotas((24, 24, 24), 8), {0: 4.0, 1: 4.0, 2: 4.0})
    assert sum(back.values()) == 8 and sorted(back.values()) == [0, 0, 8]


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.75])
def test_exact_counts_are_unchanged(ratio: float) -> None:
    """--round-to 1 removes floor(R × slots) of every group, as it always did."""
    dg = analyse(RESNET)
    counts = ratio_counts(dg, ratio, 1)
    assert counts == {g.id: g.size - n_keep(g.size, ratio, 1) for g in dg.prunable}


@pytest.mark.parametrize("round_to", [16, 8, 4, 1])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_ratio_lands_near_r_of_the_channels(round_to: int, allocation: str) -> None:
    dg = analyse(RESNET)
    res = prune(RESNET, dg=dg, ratio=0.3, round_to=round_to, allocation=allocation, verify=True)
    removed, prunable = res.channels
    assert prunable == sum(RESNET_SIZES) and res.verify is not None and res.verify.ok
    # every change of one group by a block moves the total by >= round_to channels
    assert abs(removed - 0.3 * prunable) <= max(round_to, 0.06 * prunable), removed
    for gid, idx in res.plan.removals.items():
        g = next(g for g in dg.prunable if g.id == gid)
        assert (g.size - len(idx)) % g.multiple(round_to) == 0 or len(idx) == 0


def test_global_allocation_rounds_like_uniform() -> None:
    dg = analyse(RESNET)
    scores = score_groups(dg, "l2")
    plan = global_plan(dg, scores, ratio=0.3, round_to=16)
    removed, prunable = removed_channels(dg, plan)
    assert removed == 64 and prunable == 224 and plan.ratio == 0.3 and plan.round_to == 16


def _demo(tmp_path: Path, *args: str) -> tuple[int, str, str, dict[str, object] | None]:
    out, rep = tmp_path / "demo.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["prune", str(RESNET), "-o", str(out), "--verify", "--report", str(rep),
                                  "--no-progress", *args])
    report = json.loads(rep.read_text()) if rep.exists() else None
    return r.exit_code, r.stdout, r.stderr, report


def test_make_demo_removes_about_30_percent_on_every_cpu(tmp_path: Path, cpu_profile: str) -> None:
    """`make demo` (prune resnet_ts --ratio 0.3 --verify, --round-to auto) under each CPU profile."""
    code, out, err, report = _demo(tmp_path, "--ratio", "0.3")
    assert code == 0, err
    assert report is not None
    removal = report["removal"]
    assert isinstance(removal, dict)
    achieved = removal["channels_achieved"]
    assert 0.25 <= achieved <= 0.35 and removal["channels_requested"] == 0.3
    assert (f"removed {removal['channels_removed']} of 224 prunable channels (requested 30.0%, "
            f"achieved {achieved:.1%}); MACs kept {removal['macs_kept']:.1%}") in out
    assert removal["macs_kept"] < 0.9 and "verify PASS" in out
    assert f"multiples of {resolve_round_to('auto')}" in out


def test_a_run_that_removes_nothing_exits_3_with_the_reason(tmp_path: Path) -> None:
    for args, why in [(["--round-to", "128"], ("narrower than 2 blocks of 128 channels (the widest has 64)",
                                               "try --round-to 64 or 1")),
                      (["--ratio", "0"], ("--ratio 0 removes nothing",)),
                      (["--ratio", "0.02", "--round-to", "16"], ("asks for 1 of 224 prunable channels, less than "
                                                                 "half a block of 16",)),
                      (["--target-macs", "0.999", "--round-to", "16"], ("macs budget 99.9% is closest with "
                                                                        "nothing removed",))]:
        code, _, err, report = _demo(tmp_path, *args)
        lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("warning")]
        assert code == 3 and len(lines) == 1 and lines[0].startswith("error: nothing to prune: "), (args, err)
        assert all(w in lines[0] for w in why), (args, lines[0])
        assert report is None and not (tmp_path / "demo.onnx").exists()
    with pytest.raises(NothingToPruneError, match="narrower than 2 blocks of 128"):
        prune(RESNET, ratio=0.3, round_to=128)


def test_budgets_say_what_was_asked_and_what_was_reached(tmp_path: Path, cpu_profile: str) -> None:
    code, out, err, report = _demo(tmp_path, "--target-macs", "0.6")
    assert code == 0, err
    assert report is not None and isinstance(report["removal"], dict)
    removal = report["removal"]
    assert removal["budget"] == {"metric": "macs", "requested": 0.6} and removal["channels_requested"] is None
    assert (f"removed {removal['channels_removed']} of 224 prunable channels (achieved "
            f"{removal['channels_achieved']:.1%}); MACs kept {removal['macs_kept']:.1%} (requested 60.0%)") in out


def test_sensitivity_curves_round_like_a_ratio(cpu_profile: str) -> None:
    """A 32-channel group at r=0.3 loses 16 at blocks of 16 (was 0: 22.4 kept rounded up to 32)."""
    assert removal_counts(32, [0.1, 0.3, 0.5], 16) == [0, 16, 16]
    assert removal_counts(32, [0.1, 0.3, 0.5], 1) == [3, 9, 16]
    g = Graph(opset=17)
    x = g.input("x", (1, 3, 8, 8))
    g.output(g.conv(g.relu(g.conv(x, 3, 32, name="c1")), 32, 4, name="c2"))
    model = g.build()
    dg = analyse(model)
    multiple = resolve_round_to("auto")
    curves = sensitivity_curves(dg, ratios=(0.3,), samples=2, round_to="auto")
    want = {16: 16, 8: 8, 1: 9}[multiple]
    assert [p.removed for p in curves.curves[0].points] == [want] and group_of(dg, "c1").size == 32


def test_sensitivity_with_nothing_to_measure_exits_3(tmp_path: Path) -> None:
    g = Graph(opset=17)
    x = g.input("x", (1, 3, 8, 8))
    g.output(g.conv(g.relu(g.conv(x, 3, 16, name="c1")), 16, 4, name="c2"))
    src = tmp_path / "m.onnx"
    onnx.save(g.build(), str(src))
    r = CliRunner().invoke(main, ["sensitivity", str(src), "--round-to", "16", "--samples", "2", "--no-progress"])
    assert r.exit_code == 3 and "narrower than 2 blocks of 16 channels" in r.stderr and "--round-to 8 or 1" in r.stderr
    r = CliRunner().invoke(main, ["sensitivity", str(RESNET), "--round-to", "16", "--ratios", "0.3", "--samples", "2",
                                  "--no-progress"])
    assert r.exit_code == 0, r.stderr
    assert "note: 6 of 9 groups lose no whole block of 16 channels" in r.stdout


def test_steps_make_up_for_rounding(tmp_path: Path) -> None:
    """Three steps at blocks of 16: each step asks for what the steps before left short."""
    code, out, err, report = _demo(tmp_path, "--ratio", "0.3", "--steps", "3", "--round-to", "16")
    assert code == 0, err
    assert report is not None and isinstance(report["removal"], dict)
    assert 0.25 <= report["removal"]["channels_achieved"] <= 0.35
    assert "of the prunable channels in 3 steps (requested 30.0%" in out
    assert np.isclose(report["removal"]["channels_achieved"], 64 / 224)
