"""String registries: methods as data, picked by name from configs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """A name -> object table whose lookup errors list the valid names.

    >>> SOLVERS = Registry("solver")
    >>> @SOLVERS.register("naive")
    ... def naive(): ...
    >>> SOLVERS.get("naive") is naive
    True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind} names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
