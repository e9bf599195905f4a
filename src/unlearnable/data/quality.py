"""Image-quality and perturbation metrics (PSNR, SSIM, L-inf, L2), in [0, 1] units on uint8 batches.

They sit in the data layer because both `protect` (manifest statistics) and `audit` report them.
"""

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


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-image SSIM ``(N,)`` (Wang et al. 2004; Gaussian window 11/1.5, K1=0.01, K2=0.03), mean over channels.

    The Gaussian is applied separably (two 1-D passes) to the five moment maps at once. The window shrinks for
    images smaller than 11 px so tiny test images still get a value.
    """
    # Moments are computed in float32 (fast convolutions) on images shifted by their own mean: variances are
    # differences of sums, and centring keeps those sums small so float32 cancellation stays negligible.
    n, c, h, w = a.shape
    maps = torch.empty(n, 5, c, h, w)
    x, y = maps[:, 0], maps[:, 1]
    x.copy_(a).div_(255.0) if a.dtype == torch.uint8 else x.copy_(a)
    y.copy_(b).div_(255.0) if b.dtype == torch.uint8 else y.copy_(b)
    shift = x.double().mean(dim=(1, 2, 3), keepdim=True).float()
    x.sub_(shift)
    y.sub_(shift)
    torch.mul(x, x, out=maps[:, 2])
    torch.mul(y, y, out=maps[:, 3])
    torch.mul(x, y, out=maps[:, 4])
    maps = maps.reshape(n, 5 * c, h, w)  # (N, 5C, H, W), filled in place: no stacked copies
    win = min(window, h, w)
    win -= (win + 1) % 2  # odd
    g = _gaussian_1d(win, 1.5 * win / 11).float()
    k = 5 * c
    maps = F.conv2d(maps, g.view(1, 1, win, 1).expand(k, 1, win, 1), groups=k)
    maps = F.conv2d(maps, g.view(1, 1, 1, win).expand(k, 1, 1, win), groups=k)
    mx, my, exx, eyy, exy = maps.reshape(n, 5, c, *maps.shape[-2:]).unbind(1)
    c1, c2 = 0.01**2, 0.03**2
    sxx, syy, sxy = exx - mx**2, eyy - my**2, exy - mx * my
    mx, my = mx + shift, my + shift
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()


class PerturbationStats:
    """Running PSNR/SSIM/L2/L-inf of ``protected - clean``, fed batch by batch (images of one size per call).

    Unchanged images have known values (PSNR inf, SSIM 1, distances 0) and cost nothing; accumulators from
    different batches merge with ``+=``, so a streamed pass measures as it writes.
    """

    def __init__(self) -> None:
        self.n = self.changed = self.finite = 0
        self.psnr_sum = self.ssim_sum = self.linf_sum = self.l2_sum = self.linf_max = 0.0

    def update(self, clean: torch.Tensor, protected: torch.Tensor, chunk: int = 0) -> None:
        """Add uint8 batches ``(N, C, H, W)``, measured ``chunk`` images at a time (0: about 256 K values, which
        keeps SSIM's moment maps in cache: measured 3x faster at 224 x 224 than 32 images at once)."""
        n = len(clean)
        chunk = chunk or max(1, (1 << 18) // max(1, clean[0].numel() if n else 1))
        self.n += n
        if n == 0:
            return
        idx = (clean != protected).flatten(1).any(1).nonzero().flatten()
        self.changed += len(idx)
        self.ssim_sum += n - len(idx)
        for s in range(0, len(idx), chunk):
            i = idx[s:s + chunk]
            a, b = clean[i], protected[i]
            # PSNR, L-inf and L2 from one integer difference: exact, and far cheaper than three float64 passes.
            d = (b.to(torch.int16) - a.to(torch.int16)).flatten(1)
            sq = d.to(torch.int32).pow_(2).sum(1, dtype=torch.int64).double()  # (B,) sums of squared grey levels
            li = d.abs().amax(1).double() / 255.0
            p = 10 * torch.log10(255.0**2 * d.shape[1] / sq)  # every row changed, so sq > 0
            self.psnr_sum += float(p.sum())
            self.finite += len(p)
            self.ssim_sum += float(ssim(a, b).double().sum())
            self.linf_sum += float(li.sum())
            self.linf_max = max(self.linf_max, float(li.max()))
            self.l2_sum += float(sq.sqrt().sum() / 255.0)

    def __iadd__(self, other: PerturbationStats) -> PerturbationStats:
        for k in ("n", "changed", "finite", "psnr_sum", "ssim_sum", "linf_sum", "l2_sum"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.linf_max = max(self.linf_max, other.linf_max)
        return self

    def result(self) -> dict[str, float]:
        if self.n == 0:
            return {"psnr_db": math.inf, "ssim": 1.0, "linf_max": 0.0, "linf_mean": 0.0, "l2_mean": 0.0,
                    "changed_fraction": 0.0}
        return {
            "psnr_db": self.psnr_sum / self.finite if self.finite else math.inf,
            "ssim": self.ssim_sum / self.n,
            "linf_max": self.linf_max,
            "linf_mean": self.linf_sum / self.n,
            "l2_mean": self.l2_sum / self.n,
            "changed_fraction": self.changed / self.n,
        }


def perturbation_stats(clean: torch.Tensor, protected: torch.Tensor, chunk: int = 0) -> dict[str, float]:
    """Mean PSNR/SSIM/L2 and max/mean L-inf of ``protected - clean`` over a batch of uint8 images."""
    acc = PerturbationStats()
    acc.update(clean, protected, chunk)
    return acc.result()
