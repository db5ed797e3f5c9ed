"""One registry per role (connectors, strategies, routers, index kinds...), filled on import.

Example::

    from core.registry import Registry
    STRATEGIES = Registry("strategy")

    @STRATEGIES.register("rag")
    class RagStrategy: ...

    STRATEGIES.get("rag")   # -> RagStrategy
    STRATEGIES.get("nope")  # InputError: unknown strategy 'nope'; known: rag

    with STRATEGIES.registered("toy", ToyStrategy):  # tests: registered inside the block only
        ...
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

from core.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; refuses duplicates and unknown names loudly."""

    def __init__(self, role: str):
        self.role = role
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.role} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise InputError(f"unknown {self.role} {name!r}; known: {known}") from None

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return what it named (InputError when it is unknown)."""
        obj = self.get(name)
        del self._items[name]
        return obj

    @contextmanager
    def registered(self, name: str, obj: T) -> Iterator[T]:
        """``name`` -> ``obj`` for the duration of a ``with`` block, removed after (for tests)."""
        self.add(name, obj)
        try:
            yield obj
        finally:
            self._items.pop(name, None)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """Registered names in the order they were registered."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
