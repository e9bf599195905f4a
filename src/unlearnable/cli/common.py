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


def choices_help(lead: str, names: Sequence[str], tail: str = "", width: int = 46) -> str:
    """Option help listing ``names`` whole: wrapped at ``width`` between names, never inside one.

    Click re-wraps help text and breaks words at hyphens (``fix-`` / ``decoder``); a paragraph that starts with
    ``\\b`` is printed as given, so the lines are wrapped here instead (pass ``show_default=False`` and name the
    default in ``tail``: click would append it to the last line).
    """
    import textwrap

    text = f"{lead} {', '.join(names)}{tail}"
    lines = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)
    return "\b\n" + "\n".join(lines)
