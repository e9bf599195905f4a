"""One colour per condition across every figure (demo curves and bars, audit, sweep, forget plots).

A condition keeps its colour wherever it appears: ``clean`` is always blue, ``cuda`` always red, and so on. Names
without a fixed colour get one from a spare list by a stable hash of the name, so they too never change between
figures or runs.
"""

from __future__ import annotations

import hashlib

FIXED = {
    # training data / protection methods
    "clean": "#1f77b4", "random": "#bcbd22", "cuda": "#d62728", "em": "#9467bd", "uc": "#8c564b",
    "beo": "#e377c2", "lsp": "#ff7f0e", "ops": "#17becf", "tiles": "#d95f02", "ar": "#1b9e77",
    # forget splits
    "retain": "#2ca02c", "forget": "#d62728", "test": "#1f77b4",
}
SPARE = ("#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
CHANCE = "#999999"  # the chance line
INVALID = "#d9d9d9"  # cells or bars that prove nothing

# Brain tissue classes on MRI overlays (background is left transparent).
TISSUE = {"background": "#000000", "csf": "#3182bd", "gm": "#e6550d", "wm": "#ffff99"}


def color(name: str) -> str:
    """The colour of condition ``name`` (a method, ``clean``, a forget split or strategy)."""
    key = str(name).removeprefix("protected: ").split(" ")[0]
    if key in FIXED:
        return FIXED[key]
    return SPARE[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(SPARE)]


def tissue_colors(classes: list[str] | tuple[str, ...]) -> list[str]:
    """Overlay colours for label values 0..K-1 (known tissue names fixed, others from :func:`color`)."""
    return [TISSUE.get(c.lower(), color(c)) for c in classes]
