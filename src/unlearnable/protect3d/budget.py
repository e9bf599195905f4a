"""The budget in each image's own intensity range, and re-quantisation to the file's stored type.

Rule (recorded in every manifest as :data:`RULE`): a voxel of a protected image differs from the clean one by at
most ``eps * W`` in the file's own (scaled) units, where ``W = hi - lo`` is the intensity window that the reader
maps onto [0, 1] for the models (:func:`~unlearnable.data.subjectset.intensity_window`): the 1st to 99.5th
percentile of the volume's non-zero voxels for scanner data, 0..255 for volumes stored as unscaled uint8. So
``eps`` means the same to a model whatever the scanner's units. The change is made on the stored integers (steps of
``|scl_slope|``) and clipped to ``floor(eps * W / |scl_slope|)`` steps and to the type's range, so the bound holds
exactly after re-quantisation; float files are clipped in float64 and nudged towards the clean value if the cast
rounds past the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.subjectset import intensity_window

RULE = ("|protected - clean| <= eps * (hi - lo) per voxel, in the file's scaled units after re-quantisation to its "
        "stored type; [lo, hi] is the window the reader maps onto [0, 1]: the 1st..99.5th percentile of the "
        "volume's non-zero voxels (0..255 for volumes stored as unscaled uint8)")


@dataclass(frozen=True)
class Applied:
    """A protected volume (scaled values, written through the clean file's header) and what was checked."""

    values: np.ndarray
    window: tuple[float, float]
    budget: float  # eps * (hi - lo), scaled units
    max_change: float  # measured after re-quantisation, scaled units

    def record(self) -> dict[str, float | list[float]]:
        return {"window": [self.window[0], self.window[1]], "budget": self.budget, "max_change": self.max_change}


def window_of(values: np.ndarray, as_uint8: bool) -> tuple[float, float]:
    """The reader's intensity window of one volume (see the module rule); ``as_uint8``: the subject's volumes are
    all stored as unscaled uint8, which the reader takes as they are."""
    return (0.0, 255.0) if as_uint8 else intensity_window(values)


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
        target = clean + np.clip(change, -budget, budget)
        cast = target.astype(dt)
        over = np.abs(cast.astype(np.float64) - clean) > budget
        if over.any():  # the cast rounded past the bound: step one ulp back towards the clean value
            cast[over] = np.nextafter(cast[over], clean[over].astype(dt))
        out = cast.astype(np.float64)
    out_vals = out.astype(values.dtype) if values.dtype == np.uint8 else out
    max_change = float(np.abs(out - clean).max()) if out.size else 0.0
    if max_change > budget * (1 + 1e-9) + 1e-12:
        raise RuntimeError(f"budget check failed: change {max_change} > {budget}")
    return Applied(out_vals, (float(lo), float(hi)), float(budget), max_change)
