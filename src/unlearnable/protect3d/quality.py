"""PSNR and SSIM in 3D, in each volume's own intensity window (the units the budget is stated in)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.quality import gaussian_1d


def ssim3d(a: torch.Tensor, b: torch.Tensor, window: int = 7, sigma: float = 1.5) -> float:
    """SSIM of two volumes ``(D, H, W)`` with data range 1 (Wang et al. 2004; a separable 3D Gaussian window,
    K1 = 0.01, K2 = 0.03), averaged over the valid voxels."""
    win = min(window, *a.shape)
    win -= (win + 1) % 2
    g = gaussian_1d(win, sigma * win / window)
    maps = torch.stack([a, b, a * a, b * b, a * b]).double()[:, None]  # (5, 1, D, H, W)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = win
        maps = F.conv3d(maps, g.view(shape))
    mx, my, exx, eyy, exy = maps[:, 0]
    sxx, syy, sxy = exx - mx**2, eyy - my**2, exy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def volume_quality(clean: Sequence[np.ndarray], protected: Sequence[np.ndarray],
                   windows: Sequence[tuple[float, float]]) -> dict[str, float | None]:
    """Mean over channels of 3D PSNR (dB, peak = the window) and SSIM, each channel scaled by its window.

    ``psnr_db`` is None when nothing changed (identical volumes have infinite PSNR; strict JSON has no Infinity).
    """
    psnrs, ssims = [], []
    for c, p, (lo, hi) in zip(clean, protected, windows, strict=True):
        w = max(hi - lo, 1e-12)
        c, p = np.asarray(c, dtype=np.float64), np.asarray(p, dtype=np.float64)
        nan = ~np.isfinite(c)  # NaN voxels (left as they are) count as unchanged background
        a = torch.from_numpy((np.where(nan, lo, c) - lo) / w)
        b = torch.from_numpy((np.where(nan, lo, p) - lo) / w)
        mse = float((a - b).pow(2).mean())
        psnrs.append(10 * math.log10(1.0 / mse) if mse > 0 else math.inf)
        ssims.append(ssim3d(a, b))
    finite = [x for x in psnrs if math.isfinite(x)]
    return {"psnr_db": sum(finite) / len(finite) if finite else None, "ssim": sum(ssims) / len(ssims)}
