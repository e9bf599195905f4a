"""Image-quality and perturbation metrics, computed in [0, 1] units on uint8 batches."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _f(x: torch.Tensor) -> torch.Tensor:
    # float64 so that a difference of k grey levels is exactly k/255 (budgets are compared against it)
    return x.double().div(255.0) if x.dtype == torch.uint8 else x.double()


def linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image L-infinity distance ``(N,)`` in [0, 1] units."""
    return (_f(a) - _f(b)).abs().flatten(1).amax(1)


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image L2 distance ``(N,)`` in [0, 1] units."""
    return (_f(a) - _f(b)).flatten(1).norm(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB ``(N,)`` (``inf`` for identical images)."""
    mse = (_f(a) - _f(b)).pow(2).flatten(1).mean(1)
    return torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp_min(1e-20)), torch.full_like(mse, math.inf))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-image SSIM ``(N,)`` (Wang et al. 2004; Gaussian window 11/1.5, K1=0.01, K2=0.03), mean over channels.

    The window shrinks for images smaller than 11 px so tiny test images still get a value.
    """
    x, y = _f(a), _f(b)  # float64: variances are small differences of large sums
    c = x.shape[1]
    win = min(window, x.shape[-1], x.shape[-2])
    win -= (win + 1) % 2  # odd
    w = _gaussian_window(win, 1.5 * win / 11).to(x)[None, None].repeat(c, 1, 1, 1)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()


def perturbation_stats(clean: torch.Tensor, protected: torch.Tensor, chunk: int = 1024) -> dict[str, float]:
    """Mean PSNR/SSIM/L2 and max/mean L-inf of ``protected - clean`` over a batch of uint8 images."""
    acc = {"psnr": [], "ssim": [], "linf": [], "l2": []}
    for s in range(0, len(clean), chunk):
        a, b = clean[s:s + chunk], protected[s:s + chunk]
        acc["psnr"].append(psnr(a, b))
        acc["ssim"].append(ssim(a, b))
        acc["linf"].append(linf(a, b))
        acc["l2"].append(l2(a, b))
    cat = {k: torch.cat(v) for k, v in acc.items()}
    finite = cat["psnr"][torch.isfinite(cat["psnr"])]
    return {
        "psnr_db": float(finite.mean()) if len(finite) else math.inf,
        "ssim": float(cat["ssim"].mean()),
        "linf_max": float(cat["linf"].max()),
        "linf_mean": float(cat["linf"].mean()),
        "l2_mean": float(cat["l2"].mean()),
        "changed_fraction": float((cat["linf"] > 0).float().mean()),
    }
