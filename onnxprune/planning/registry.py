"""A registry of named planning units (budget kinds, allocation strategies): one new unit is one
class plus a registration, and an unknown name is one clear error."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from onnxprune.errors import OnnxPruneError


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what  # "budget kind", "allocation": how errors name an entry
        self._items: dict[str, T] = {}

    def add(self, item: T) -> T:
        self._items[item.name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise OnnxPruneError(f"unknown {self.what} {name!r}; choose one of: {', '.join(self._items)}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)
