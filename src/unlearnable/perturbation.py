"""Perturbation pieces every room may use: the quantised perturbation table and norm-ball steps.

Protections produce tables and take steps inside a budget; defences (adversarial training) take the same steps.
Both import them from here rather than from each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseTable:
    """Integer grey-level offsets: ``(K, C, H, W)`` per class, or ``(N, C, H, W)`` per sample id."""

    steps: torch.Tensor
    mode: str
    ids: tuple[str, ...] = ()


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample of ``(B, ...)``, shaped ``(B, 1, ...)`` for broadcasting, never below 1e-12."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def step(delta: torch.Tensor, grad: torch.Tensor, size: float, norm: str) -> torch.Tensor:
    """One steepest-ascent step along ``grad`` (pass ``-grad`` to descend): sign step for L-inf, unit-L2 otherwise."""
    if norm == "linf":
        return delta + size * grad.sign()
    return delta + size * grad / per_sample_norm(grad)


def project(delta: torch.Tensor, eps: float, norm: str, x: torch.Tensor | None = None) -> torch.Tensor:
    """Project ``delta`` ``(B, C, H, W)`` onto the ``eps`` ball; with ``x``, also keep ``x + delta`` in [0, 1]."""
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / per_sample_norm(delta)).clamp(max=1.0)
    if x is not None:
        delta = (x + delta).clamp(0.0, 1.0) - x
    return delta


def random_resized_crop(x: torch.Tensor, scale: float, ratio: float = 4 / 3, flip: bool = True,
                        g: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop`` at the batch's own size, batched: per image a box of area
    ``U(scale, 1)`` of the image and aspect ratio log-uniform in ``[1 / ratio, ratio]`` (clipped to the image
    instead of redrawn), at a uniform position, resized back to ``(H, W)`` bilinearly; then a horizontal flip for
    half of them. Every crop is an *enlargement*, by up to ``1 / sqrt(scale)``: any pattern in the image reaches the
    model at a different scale and phase each time. Float ``(B, C, H, W)``; ``g`` as in :func:`random_crop_flip`."""
    b = x.shape[0]
    area = scale + (1 - scale) * torch.rand(b, generator=g)
    log_r = (2 * torch.rand(b, generator=g) - 1) * math.log(ratio)
    cw = (area * log_r.exp()).sqrt().clamp(max=1.0)  # box width and height as fractions of the image's
    ch = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (1 - cw) * (2 * torch.rand(b, generator=g) - 1)  # box centre in [-1, 1] coordinates, box inside
    cy = (1 - ch) * (2 * torch.rand(b, generator=g) - 1)
    sign = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = cw * sign, cx, ch, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, g: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` by ``pad``, crop back to ``(H, W)`` at a random offset per image, flip half
    horizontally. Differentiable in ``x`` (an indexing op), so protections can optimise through it (EOT);
    ``g`` (CPU generator) makes the draws reproducible from a key, else the global RNG is used."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (oy[:, None] + torch.arange(h)).to(x.device)
    cols = (ox[:, None] + torch.arange(w)).to(x.device)
    if flip:
        cols = torch.where((torch.rand(b, generator=g) < 0.5).to(x.device)[:, None], cols.flip(1), cols)
    n = torch.arange(b, device=x.device)
    return xp[n[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
              rows[:, None, :, None], cols[:, None, None, :]]
