"""Channel rules keyed by domain, op type and opset range.

Rules of the default ONNX domain are matched against the model's default-domain opset; rules of
another domain (ONNX Runtime's `com.microsoft` contrib ops) against that domain's opset import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnxprune.graph.context import RuleContext

RuleFn = Callable[[RuleContext], None]


@dataclass(frozen=True)
class Rule:
    op_type: str
    domain: str  # "" for the default ONNX domain
    since: int
    until: int | None  # inclusive
    fn: RuleFn
    source: bool  # creates channels even when no tracked input reaches it


CONTRIB = "com.microsoft"
_RULES: dict[tuple[str, str], list[Rule]] = {}


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def register(*op_types: str, since: int = 1, until: int | None = None, source: bool = False,
             domain: str = "") -> Callable[[RuleFn], RuleFn]:
    def deco(fn: RuleFn) -> RuleFn:
        for op in op_types:
            _RULES.setdefault((_domain(domain), op), []).append(Rule(op, _domain(domain), since, until, fn, source))
        return fn

    return deco


def lookup(op_type: str, opset: int, domain: str = "") -> Rule | None:
    """The rule for `op_type` of `domain` at that domain's opset version `opset`, or None."""
    for rule in _RULES.get((_domain(domain), op_type), []):
        if rule.since <= opset and (rule.until is None or opset <= rule.until):
            return rule
    return None


