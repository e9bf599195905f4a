"""Option parsing shared by the command modules."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UserError


def parse_params(items: Sequence[str] | None) -> dict[str, str]:
    """``["blur=0.3", "kernel=5"]`` -> ``{"blur": "0.3", "kernel": "5"}``; types are checked by the method."""
    out: dict[str, str] = {}
    for item in items or ():
        if "=" not in item:
            raise UserError(f"--param {item}: expected NAME=VALUE (e.g. --param blur=0.3)")
        k, v = item.split("=", 1)
        if not k.strip():
            raise UserError(f"--param {item}: empty parameter name")
        out[k.strip()] = v.strip()
    return out
