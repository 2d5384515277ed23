"""Name -> object lookups, one registry per family (layers, activations, ...).

The YAML word and the registered name are the same word. An unknown word is
an error that lists the known ones and suggests the closest.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def did_you_mean(word: str, known: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest known word, or ''."""
    close = difflib.get_close_matches(str(word), known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class UnknownName(KeyError):
    """Raised by Registry.get; the spec layer turns it into a ConfigError with a key path."""

    def __init__(self, family: str, word: str, known: list[str]):
        self.family, self.word, self.known = family, word, known
        super().__init__(self.describe())

    def describe(self) -> str:
        return (f"unknown {self.family} '{self.word}'{did_you_mean(self.word, self.known)}; "
                f"known: {', '.join(self.known)}")


class Registry(Generic[T]):
    def __init__(self, family: str, sort: bool = True):
        """`sort` false: names() in the order of registration (a family listed in its docs' order)."""
        self.family = family
        self.sort = sort
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.family} '{name}' registered twice")
            self._items[name] = obj
            return obj
        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownName(self.family, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._items) if self.sort else list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
