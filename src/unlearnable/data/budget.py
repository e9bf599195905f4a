"""Adding a change to stored image values within a budget, exactly representable in the file's stored type.

Shared by the 3D writer (NIfTI volumes, :mod:`unlearnable.protect3d.budget`, whose module text states the rule)
and the 2D writer of images of more than 8 bits (:func:`unlearnable.data.formats.images.protect_high_depth`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Applied:
    """A protected volume (scaled values, written through the clean file's header) and what was checked."""

    values: np.ndarray
    window: tuple[float, float]
    budget: float  # eps * (hi - lo), scaled units
    max_change: float  # measured after re-quantisation, scaled units

    def record(self) -> dict[str, float | list[float]]:
        return {"window": [self.window[0], self.window[1]], "budget": self.budget, "max_change": self.max_change}


def apply_delta(values: np.ndarray, delta: np.ndarray, eps: float, window: tuple[float, float], dtype: np.dtype,
                slope: float = 1.0, inter: float = 0.0) -> Applied:
    """Add ``delta`` (model units, ``(D, H, W)``) to a clean volume ``values`` (scaled units) within the budget.

    ``dtype``/``slope``/``inter`` are the file's stored type and scaling; the result is exactly representable in
    them (integers: ``inter + slope * k``), so :func:`~unlearnable.data.formats.nifti.write_volume` stores it as is.
    """
    lo, hi = window
    budget = eps * (hi - lo)
    change = delta.astype(np.float64) * (hi - lo)
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        step = abs(slope) if slope else 1.0
        k = math.floor(budget / step + 1e-9)
        stored = np.rint((values.astype(np.float64) - inter) / (slope or 1.0))
        moved = np.clip(np.rint(change / (slope or 1.0)), -k, k)
        new_stored = np.clip(stored + moved, info.min, info.max)  # clipping can only shrink a change
        out = new_stored * (slope or 1.0) + inter
        clean = stored * (slope or 1.0) + inter
    else:
        clean = values.astype(np.float64)
        target = clean + np.where(np.isfinite(clean), np.clip(change, -budget, budget), 0.0)  # NaN stays NaN
        cast = target.astype(dt)
        over = np.abs(cast.astype(np.float64) - clean) > budget
        if over.any():  # the cast rounded past the bound: step one ulp back towards the clean value
            cast[over] = np.nextafter(cast[over], clean[over].astype(dt))
        out = cast.astype(np.float64)
    out_vals = out.astype(values.dtype) if values.dtype == np.uint8 else out
    moved = np.abs(out - clean)[np.isfinite(clean)]  # NaN voxels are left as they are
    max_change = float(moved.max()) if moved.size else 0.0
    if max_change > budget * (1 + 1e-9) + 1e-12:
        raise RuntimeError(f"budget check failed: change {max_change} > {budget}")
    return Applied(out_vals, (float(lo), float(hi)), float(budget), max_change)
