"""Passes: model-to-model transforms in the style of onnx-ir's pass infrastructure.

A pass is an object with `call(model) -> PassResult(model, modified)`. It may declare
pre- and post-conditions, which the manager checks around each call.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TypeVar

import onnx

from onnxprune.errors import InternalError, OnnxPruneError

ENTRY_POINT_GROUP = "onnxprune.passes"
T = TypeVar("T")


def runs_within(items: Iterable[T], size: Callable[[T], int], budget: int) -> Iterator[list[T]]:
    """`items` in order, in runs whose sizes add up to at most `budget` (an item above it runs alone)."""
    run: list[T] = []
    used = 0
    for item in items:
        n = size(item)
        if run and used + n > budget:
            yield run
            run, used = [], 0
        run.append(item)
        used += n
    if run:
        yield run


@dataclass
class PassResult:
    model: onnx.ModelProto
    modified: bool
    notes: list[str] = field(default_factory=list)


class PassConditionError(InternalError):
    """A pass's pre- or post-condition failed: the pass, not the input model, is at fault."""


class Pass(abc.ABC):
    """Base class. Subclasses implement `call`; `requires` and `ensures` are optional checks."""

    name: str = ""

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        self.requires(model)
        result = self.call(model)
        self.ensures(result.model)
        return result

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult: ...

    def requires(self, model: onnx.ModelProto) -> None:  # noqa: B027 - optional hook
        """Raise PassConditionError if the model is not fit for this pass."""

    def ensures(self, model: onnx.ModelProto) -> None:  # noqa: B027 - optional hook
        """Raise PassConditionError if the pass produced an invalid model."""

    @property
    def display_name(self) -> str:
        return self.name or type(self).__name__


class PassManager(Pass):
    """Runs passes in order; with `steps > 1` repeats the sequence until nothing changes."""

    def __init__(self, passes: Sequence[Pass], *, steps: int = 1) -> None:
        self.passes = list(passes)
        self.steps = steps

    def call(self, model: onnx.ModelProto) -> PassResult:
        modified = False
        notes: list[str] = []
        for _ in range(self.steps):
            step_modified = False
            for p in self.passes:
                r = p(model)
                model = r.model
                step_modified |= r.modified
                notes.extend(f"{p.display_name}: {n}" for n in r.notes)
            modified |= step_modified
            if not step_modified:
                break
        return PassResult(model, modified, notes)


def plugin_passes() -> dict[str, type[Pass]]:
    """Third-party passes registered under the `onnxprune.passes` entry-point group."""
    found: dict[str, type[Pass]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if not (isinstance(obj, type) and issubclass(obj, Pass)):
            raise OnnxPruneError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} is not a Pass subclass")
        found[ep.name] = obj
    return found



def resolve_passes(passes: Sequence[Pass | str]) -> list[Pass]:
    """Passes given as objects, or by the name of a plugin registered under `onnxprune.passes`
    (instantiated without arguments). An unknown name is an error that lists the registered ones."""
    out: list[Pass] = []
    plugins: dict[str, type[Pass]] | None = None
    for p in passes:
        if isinstance(p, Pass):
            out.append(p)
            continue
        plugins = plugin_passes() if plugins is None else plugins
        if p not in plugins:
            known = ", ".join(sorted(plugins)) or "none installed"
            raise OnnxPruneError(f"no pass named {p!r} in the {ENTRY_POINT_GROUP} entry-point group ({known})")
        out.append(plugins[p]())
    return out
