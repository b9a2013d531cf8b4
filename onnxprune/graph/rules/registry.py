"""Channel rules keyed by op type and opset range."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnxprune.graph.analysis import RuleContext

RuleFn = Callable[[RuleContext], None]


@dataclass(frozen=True)
class Rule:
    op_type: str
    since: int
    until: int | None  # inclusive
    fn: RuleFn
    source: bool  # creates channels even when no tracked input reaches it


_RULES: dict[str, list[Rule]] = {}


def register(*op_types: str, since: int = 1, until: int | None = None,
             source: bool = False) -> Callable[[RuleFn], RuleFn]:
    def deco(fn: RuleFn) -> RuleFn:
        for op in op_types:
            _RULES.setdefault(op, []).append(Rule(op, since, until, fn, source))
        return fn

    return deco


def lookup(op_type: str, opset: int) -> Rule | None:
    _load_families()
    for rule in _RULES.get(op_type, []):
        if rule.since <= opset and (rule.until is None or opset <= rule.until):
            return rule
    return None


_LOADED = False


def _load_families() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from onnxprune.graph.rules import (  # noqa: F401 - imported for their registrations
        concat_split,
        conv,
        elementwise,
        linear,
        norm,
        pooling,
        reduce,
        reshape,
        rnn,
        shape_ops,
    )
