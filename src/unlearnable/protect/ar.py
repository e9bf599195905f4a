"""AR: autoregressive perturbations (Sandoval-Segura, Singla, Geiping, Goldblum, Goldstein & Jacobs, "Autoregressive
Perturbations for Data Poisoning", NeurIPS 2022).

Each class ``k`` owns a 2D autoregressive process per channel: a ``3 x 3`` causal window whose eight coefficients
``b`` (the bottom-right one is 0) are drawn from the key and normalised to sum to 1 (the paper's rule: normalised
coefficients keep the process stable). Every image gets its own realisation — Gaussian start values, then each
pixel ``x[i, j] = sum(b * window)`` in raster order — so no two images carry the same noise, yet one convolution
filter (``b`` with -1 in the last tap) responds with zero to every image of class ``k`` and not to the others: a
shortcut a network finds in a few steps, at any position (so random crops and flips do not remove it), and one
that needs no model at all.

Budget: the paper scales each realisation to an exact norm. For L-inf we spend the budget better: the realisation
is standardised and multiplied by ``gain * eps`` before clipping to ``[-eps, eps]`` (``gain=0`` reproduces the
paper's max-normalisation). The clipped pixels keep their sign pattern, which is what the filter detects.

Perturbations are drawn per sample from ``key`` and the sample id, so ``apply`` is pure, works at any image size
(each image's noise is generated at its own size) and needs no stored table: the fitted object holds only the
class coefficients and a per-purpose seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from ..errors import UserError
from . import _gradient as G
from .base import METHODS, Protection, add_within_linf, require_fitted, require_labels
from .keys import Key, sample_seed

WINDOW = 3
MIN_RESPONSE = 0.3  # matched filters of other classes must respond at least this much (unit-std signals)
CHUNK = 512  # images generated together (the raster loop is vectorised over them)


@dataclass(frozen=True)
class ARFilters:
    """Class-wise AR coefficients ``(K, C, 3, 3)`` (last tap 0) and the secret seed of the per-sample starts."""

    coeffs: torch.Tensor
    seed: int


def draw_coefficients(num_classes: int, channels: int, g: torch.Generator, tries: int = 2000) -> torch.Tensor:
    """``(K, C, 3, 3)`` AR coefficients that are stable and tell the classes apart (the paper's parameter search).

    A draw is kept only if (1) its realisations do not diverge: the energy of the last rows stays within a
    factor of the first rows (a diverging process puts all its energy in the bottom-right corner, which a crop
    removes), and (2) the matched filters of the classes already kept respond clearly to it (mean |response|
    at least ``MIN_RESPONSE`` of the signal's scale), so no two classes look alike to a convolution.
    """
    chosen: list[torch.Tensor] = []
    probe = torch.randn(2, channels, 14, 14, generator=g, dtype=torch.float64)
    for _ in range(tries):
        b = torch.randn(channels, WINDOW, WINDOW, generator=g)
        b[:, -1, -1] = 0.0
        b = b / b.sum(dim=(1, 2), keepdim=True)
        x = generate(b.expand(len(probe), -1, -1, -1), probe)
        if not torch.isfinite(x).all() or not _stationary(b, probe):
            continue
        if chosen and min(float(matched_response(c, x)) for c in chosen) < MIN_RESPONSE:
            continue
        chosen.append(b)
        if len(chosen) == num_classes:
            return torch.stack(chosen)
    raise UserError(f"method 'ar': found only {len(chosen)} distinct stable AR processes for {num_classes} classes")


def _stationary(b: torch.Tensor, probe: torch.Tensor) -> bool:
    raw = _run(b.expand(len(probe), -1, -1, -1), probe)[:, :, WINDOW:, WINDOW:]
    q = raw.shape[2] // 4
    top, bottom = raw[:, :, :q].pow(2).mean(), raw[:, :, -q:].pow(2).mean()
    return bool(torch.isfinite(bottom)) and float(bottom) <= 4.0 * float(top) and float(bottom) > 1e-6


def matched_response(b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean |response| of the AR filter ``b`` ``(C, 3, 3)`` (with -1 in the last tap) on ``x`` ``(B, C, H, W)``."""
    f = b.clone().to(x.dtype)
    f[:, -1, -1] = -1.0
    return F.conv2d(x, f[None]).abs().mean()


def generate(coeffs: torch.Tensor, starts: torch.Tensor, crop: int = WINDOW) -> torch.Tensor:
    """AR realisations from Gaussian ``starts`` ``(B, C, H + crop, W + crop)`` with ``coeffs`` ``(B, C, 3, 3)``.

    Returns ``(B, C, H, W)``, zero mean and unit std per image. ``crop`` burn-in rows and columns are dropped (the
    start values are not AR yet).
    """
    x = _run(coeffs, starts)[:, :, crop:, crop:]
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    return (x / x.flatten(1).std(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)).float()


def _run(coeffs: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """The raw AR recursion over ``starts`` ``(B, C, H, W)`` (float64, not normalised)."""
    b, c, h, w = starts.shape
    x = starts.to(torch.float64).clone()
    k = coeffs.to(torch.float64).reshape(b, c, WINDOW * WINDOW)
    # Raster order: each pixel depends on the row above and the two pixels to its left, so columns are
    # sequential; the work inside one step is vectorised over images and channels.
    for i in range(WINDOW - 1, h):
        for j in range(WINDOW - 1, w):
            win = x[:, :, i - 2:i + 1, j - 2:j + 1].reshape(b, c, -1)
            x[:, :, i, j] = (win * k).sum(-1)
    return x


@METHODS.register("ar")
class Autoregressive(Protection):
    """Class-wise AR processes, a fresh realisation per image, within an L-inf or L2 budget (model-free)."""

    summary = "autoregressive class-wise noise, a new realisation per image (Sandoval-Segura et al., NeurIPS 2022)"
    size_free = True  # the noise is generated at each image's own size
    fit_reads_pixels = False  # fit needs labels, ids and the channel count only

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        norm: str = "linf"  # linf | l2
        gain: float = 2.0  # linf: std of the noise before clipping, in units of eps (0 = scale max to eps)

        def validate(self) -> None:
            G.check_budget(self.eps, self.norm)
            if self.gain < 0:
                raise UserError(f"--param gain={self.gain}: must be >= 0 (0 = the paper's max-normalisation)")

    def fit(self, data: ImageSet, key: Key) -> ARFilters:
        require_labels(self.name, data)
        g = key.generator("ar/coefficients")
        return ARFilters(draw_coefficients(data.num_classes, data.channels, g), key.seed("ar/starts"))

    def noise(self, data: ImageSet, filters: ARFilters) -> torch.Tensor:
        """Float perturbation ``(N, C, H, W)`` in [0, 1] units, within the budget before quantisation."""
        require_fitted(data, filters.coeffs.shape[0], filters.coeffs.shape[1], "AR filters")
        h, w = data.size
        out = torch.empty(data.images.shape, dtype=torch.float32)
        for s in range(0, len(data), CHUNK):
            ids = data.ids[s:s + CHUNK]
            # One generator per sample: the noise of a sample depends on the key and its id only.
            starts = torch.stack([torch.randn(data.channels, h + WINDOW, w + WINDOW, dtype=torch.float64,
                                              generator=torch.Generator().manual_seed(sample_seed(filters.seed, i)))
                                  for i in ids])
            out[s:s + CHUNK] = generate(filters.coeffs[data.labels[s:s + CHUNK]], starts)
        return self.scale(out)

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.norm == "l2":
            return z / z.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * p.eps
        if p.gain == 0:
            return z / z.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1) * p.eps
        return (z * p.gain * p.eps).clamp(-p.eps, p.eps)

    def apply(self, data: ImageSet, perturbation: ARFilters) -> torch.Tensor:
        delta = self.noise(data, perturbation)
        if self.params.norm == "linf":
            return add_within_linf(data.images, delta, self.params.eps)
        steps = G.quantise(delta, self.params.eps, "l2")
        return (data.images.to(torch.int16) + steps).clamp_(0, 255).to(torch.uint8)
