"""One small registry used for methods, models, formats, defences and strategies.

Names are registered at the definition site (``@METHODS.register("cuda")``); a duplicate name is an error, and an
unknown name is answered with the closest known names (MONAI's ``look_up_option`` behaviour).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def look_up_option(name: str, options: Iterable[str], what: str = "option") -> str:
    """Check that ``name`` is one of ``options``; raise a one-line UserError with a suggestion otherwise."""
    opts = list(options)
    if name in opts:
        return name
    raise UserError(f"unknown {what} '{name}'{did_you_mean(name, opts)}; choose from: {', '.join(sorted(opts))}")


class Registry(Generic[T]):
    """A named collection of classes or factories."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} '{name}' is already registered")
            self._items[name] = obj
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a bench or test that registered a temporary entry puts the registry back)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        return self._items[look_up_option(name, self._items, self.what)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
