"""Image-quality and perturbation metrics (PSNR, SSIM, L-inf, L2), in [0, 1] units on uint8 batches.

They sit in the data layer because both `protect` (manifest statistics) and `audit` report them.
"""

from __future__ import annotations

import functools
import math

import numpy as np
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


def gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian window of ``size`` taps (float64), shared by the 2D and 3D SSIM."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


#: A streamed pass measures SSIM on every image of a split of up to ``2 * SSIM_MIN`` images, and above that on an
#: evenly spaced sample of at least ``SSIM_MIN`` images and at least one in ``SSIM_EVERY``: SSIM costs about as much
#: CPU as the PNG codec at 224 px (docs/benchmarks.md), so sampling bounds its share of the pass, while the sample
#: still grows with the split. The manifest gives the sample size and the mean's standard error (``ssim_images``,
#: ``ssim_se``); PSNR and the distances are always over every image.
SSIM_EVERY = 16
SSIM_MIN = 64


#: Images at most this wide/high are filtered by two matrix products instead of grouped convolutions: measured
#: 2.5x faster at 28 x 28 (BLAS on a few small matrices beats per-channel convolution set-up), slower at 224 x 224
#: where the banded matrix is mostly zeros (docs/benchmarks.md).
MATMUL_MAX_SIDE = 64


@functools.lru_cache(maxsize=32)
def _band(n: int, win: int) -> torch.Tensor:
    """``(n, n - win + 1)`` float32: column j holds the Gaussian window on rows j..j+win-1, so ``x @ band`` is
    'valid' filtering of the last dimension of ``x``."""
    g = gaussian_1d(win, 1.5 * win / 11).float()
    m = torch.zeros(n, n - win + 1)
    for j in range(n - win + 1):
        m[j:j + win, j] = g
    return m


def _blur_valid(maps: torch.Tensor, win: int) -> torch.Tensor:
    """Separable Gaussian 'valid' filtering of ``(M, H, W)`` maps -> ``(M, H', W')`` or, by matrix products,
    ``(M, W', H')``: SSIM only averages elementwise formulas of these maps, so the orientation does not matter.
    Large maps are filtered channels-last: a copy there and back, and still 2-2.5x faster depthwise convolutions
    than on ``(M, H, W)`` as it is (the elementwise steps after them need the contiguous layout)."""
    m, h, w = maps.shape
    if max(h, w) <= MATMUL_MAX_SIDE:
        t = (maps.reshape(m * h, w) @ _band(w, win)).reshape(m, h, -1)
        return (t.transpose(1, 2).reshape(-1, h) @ _band(h, win)).reshape(m, w - win + 1, h - win + 1)
    g = _band(win, win)[:, 0]  # the window itself
    x = maps.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    x = F.conv2d(x, g.view(1, 1, win, 1).expand(m, 1, win, 1), groups=m)
    return F.conv2d(x, g.view(1, 1, 1, win).expand(m, 1, 1, win), groups=m)[0].contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-image SSIM ``(N,)`` (Wang et al. 2004; Gaussian window 11/1.5, K1=0.01, K2=0.03), mean over channels.

    Four moment maps are filtered (x, y, x^2 + y^2, xy: the formula needs the variances only as a sum), each by
    two 1-D passes. The window shrinks for images smaller than 11 px so tiny test images still get a value.
    """
    # Moments are computed in float32 (fast filtering) in grey levels (uint8 input; C1, C2 scaled by 255^2, which
    # leaves SSIM unchanged) on images shifted by their own mean: variances are differences of sums, and centring
    # keeps those sums small so float32 cancellation stays negligible. Every step after the filter is in place:
    # fresh large tensors cost page faults that measured as much as the arithmetic (docs/benchmarks.md).
    n, c, h, w = a.shape
    scale = 255.0 if a.dtype == torch.uint8 else 1.0
    flat = torch.empty(n * 4 * c, h, w)
    maps = flat.unflatten(0, (n, 4, c))  # (N, 4, C, H, W) view
    x, y = maps[:, 0], maps[:, 1]
    shift = a.double().mean(dim=(1, 2, 3), keepdim=True).float()
    torch.sub(a, shift, out=x)
    torch.sub(b, shift, out=y)
    torch.mul(x, x, out=maps[:, 2]).addcmul_(y, y)
    torch.mul(x, y, out=maps[:, 3])
    win = min(window, h, w)
    win -= (win + 1) % 2  # odd
    mx, my, var_sum, cov = _blur_valid(flat, win).unflatten(0, (n, 4, c)).unbind(1)  # (N, C, h', w') each
    c1, c2 = (0.01 * scale) ** 2, (0.03 * scale) ** 2
    var_sum.addcmul_(mx, mx, value=-1).addcmul_(my, my, value=-1).add_(c2)  # sigma_x^2 + sigma_y^2 + C2
    cov.addcmul_(mx, my, value=-1).mul_(2).add_(c2)  # 2 sigma_xy + C2
    mx.add_(shift)
    my.add_(shift)
    num = torch.mul(mx, my).mul_(2).add_(c1).mul_(cov)
    den = mx.mul_(mx).addcmul_(my, my).add_(c1).mul_(var_sum)
    return num.div_(den).mean(dim=(1, 2, 3))


def _rows(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Both batches as ``(N, C*H*W)`` arrays with their pixels in one order: the memory order of ``a`` where it is
    channels-last (decoded images stacked by numpy are), so that flattening is a view instead of a copy."""
    n = len(a)
    if not a.is_contiguous() and a.dim() == 4 and a.permute(0, 2, 3, 1).is_contiguous():
        a, b = a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)  # the same order for both, whatever b's layout
    return a.reshape(n, -1).numpy(), b.reshape(n, -1).numpy()


class PerturbationStats:
    """Running PSNR/SSIM/L2/L-inf of ``protected - clean``, fed batch by batch (images of one size per call).

    PSNR, L2 and L-inf are exact over every image. SSIM, which costs more than the codec at 224 px, may be measured
    on a subset (``ssim_rows``; a pass picks an evenly spread, fixed sample: :data:`SSIM_EVERY`); its mean is over
    the ``ssim_n`` images it saw. Unchanged images have known values (PSNR inf, SSIM 1, distances 0) and cost
    nothing; accumulators from different batches merge with ``+=``, so a streamed pass measures as it writes.
    """

    def __init__(self) -> None:
        self.n = self.changed = self.finite = self.ssim_n = 0
        self.psnr_sum = self.ssim_sum = self.ssim_sq = self.linf_sum = self.l2_sum = self.linf_max = 0.0

    def update(self, clean: torch.Tensor, protected: torch.Tensor, chunk: int = 0,
               ssim_rows: np.ndarray | torch.Tensor | None = None) -> None:
        """Add uint8 batches ``(N, C, H, W)``, measured ``chunk`` images at a time (0: about 256 K values, which
        keeps SSIM's moment maps in cache: the fastest of 1..16 images measured at 28, 128 and 224 px).
        ``ssim_rows``: bool ``(N,)``, the images whose SSIM is measured (``None``: all of them)."""
        n = len(clean)
        self.n += n
        if n == 0:
            return
        chunk = chunk or max(1, (1 << 18) // max(1, clean[0].numel()))
        sampled = np.ones(n, dtype=bool) if ssim_rows is None else np.asarray(ssim_rows, dtype=bool)
        flat_a, flat_b = _rows(clean, protected)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            # One pass for PSNR, L-inf, L2 and "did it change": the difference in float32 (exact for grey levels),
            # its extremes and its dot product with itself (sums of squared levels to float32 precision, 1e-6
            # relative), 3x cheaper than the int16/int32/int64 chain it replaces (docs/benchmarks.md).
            d = np.subtract(flat_b[s:e], flat_a[s:e], dtype=np.float32)
            li = np.maximum(d.max(1), -d.min(1)).astype(np.float64)
            sq = np.einsum("ij,ij->i", d, d).astype(np.float64)
            moved = li > 0
            k = int(moved.sum())
            self.changed += k
            pick = sampled[s:e]
            self.ssim_n += int(pick.sum())
            same = int((pick & ~moved).sum())  # unchanged images in the sample: SSIM exactly 1
            self.ssim_sum += same
            self.ssim_sq += same
            if k == 0:
                continue
            sq_m = sq[moved]
            self.psnr_sum += float((10 * np.log10(255.0**2 * d.shape[1] / sq_m)).sum())
            self.finite += k
            self.linf_sum += float(li[moved].sum() / 255.0)
            self.linf_max = max(self.linf_max, float(li.max() / 255.0))
            self.l2_sum += float(np.sqrt(sq_m).sum() / 255.0)
            rows = pick & moved
            if rows.any():
                if rows.all():  # the usual case for a protected split: a slice is a view, an index would copy
                    v = ssim(clean[s:e], protected[s:e]).double()
                else:
                    i = torch.from_numpy(np.flatnonzero(rows) + s)
                    v = ssim(clean[i], protected[i]).double()
                self.ssim_sum += float(v.sum())
                self.ssim_sq += float(v.square().sum())

    def __iadd__(self, other: PerturbationStats) -> PerturbationStats:
        for k in ("n", "changed", "finite", "ssim_n", "psnr_sum", "ssim_sum", "ssim_sq", "linf_sum", "l2_sum"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.linf_max = max(self.linf_max, other.linf_max)
        return self

    def ssim_se(self) -> float:
        """Standard error of the SSIM mean as an estimate of the mean over all ``n`` images: 0 when every image was
        measured (sample variance with the finite-population correction for a sample drawn without replacement)."""
        k = self.ssim_n
        if k < 2 or k >= self.n:
            return 0.0
        var = max(0.0, (self.ssim_sq - self.ssim_sum**2 / k) / (k - 1))
        return math.sqrt(var / k * (1 - k / self.n))

    def result(self) -> dict[str, float | str | None]:
        """Means over all images (SSIM: over the ``ssim_images`` measured); ``psnr_db`` is the mean over changed
        images only, ``None`` (with ``psnr_note``) when no image changed: the PSNR of identical images is infinite
        and strict JSON has no Infinity."""
        unchanged = {"psnr_db": None, "psnr_note": "null: no image changed (PSNR of identical images is infinite)"}
        if self.n == 0:
            return {**unchanged, "ssim": 1.0, "ssim_images": 0, "ssim_se": 0.0, "linf_max": 0.0, "linf_mean": 0.0,
                    "l2_mean": 0.0, "changed_fraction": 0.0}
        return {
            **({"psnr_db": self.psnr_sum / self.finite} if self.finite else unchanged),
            "ssim": self.ssim_sum / self.ssim_n if self.ssim_n else 1.0,
            "ssim_images": self.ssim_n,
            "ssim_se": self.ssim_se(),
            "linf_max": self.linf_max,
            "linf_mean": self.linf_sum / self.n,
            "l2_mean": self.l2_sum / self.n,
            "changed_fraction": self.changed / self.n,
        }


def perturbation_stats(clean: torch.Tensor, protected: torch.Tensor, chunk: int = 0) -> dict[str, float | str | None]:
    """Mean PSNR/SSIM/L2 and max/mean L-inf of ``protected - clean`` over a batch of uint8 images."""
    acc = PerturbationStats()
    acc.update(clean, protected, chunk)
    return acc.result()
