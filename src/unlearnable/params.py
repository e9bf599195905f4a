"""Typed parameters from strings: the one rule set for ``--param k=v``, defence specs and presets."""

from __future__ import annotations

import typing
from typing import Any

from .errors import UserError
from .utils import parse_number


def coerce(value: Any, hint: Any, what: str) -> Any:
    """Turn a string ``value`` into the type ``hint`` names (bool, int, float; others stay strings).

    Numbers accept fractions (``8/255``); ``what`` names the field in the one-line error. Non-strings pass through.
    """
    if isinstance(value, str):
        base = base_type(hint)
        if base is bool:
            low = value.lower()
            if low not in ("1", "0", "true", "false", "yes", "no"):
                raise UserError(f"{what}: '{value}' is not true/false")
            return low in ("1", "true", "yes")
        if base is int:
            f = parse_number(value, what)
            if f != int(f):
                raise UserError(f"{what}: '{value}' is not a whole number")
            return int(f)
        if base is float:
            return parse_number(value, what)
        return value
    return value


def base_type(hint: Any) -> Any:
    """``int`` for ``int | None`` and ``Optional[int]``; the hint itself otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args and typing.get_origin(hint) is not None else hint
