"""Perturbation generators: fixed noise codes in, bounded perturbations out.

Unlearnable Clusters (Zhang et al., CVPR 2023, Sec. 3.3) draws each cluster's perturbation from a ResNet-style
generator fed with fixed random noise and squashed with ``tanh`` into the budget. Here ONE generator maps K fixed
noise codes (one per cluster) to K perturbations in a single batched forward pass, so training all clusters costs
one pass over the data per epoch whatever K is (the cost per step grows only with a K-image generator forward).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a skip connection (no BatchNorm: the batch is only K codes)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        groups = math.gcd(8, width)
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class NoiseGenerator(nn.Module):
    """A ResNet generator over K fixed noise codes ``(K, C, h, w)`` -> perturbations ``(K, C, H, W)``.

    Codes may be coarser than the image (``size``); the output is then upsampled bilinearly, which gives smooth,
    low-frequency perturbations that survive clipping at black/white pixels and that a victim learns quickly.

    The output is ``eps * tanh(.)`` for an L-infinity budget, or ``tanh(.)`` rescaled to L2 norm at most ``eps``
    per perturbation for an L2 budget (UC's two threat models).
    """

    def __init__(self, codes: torch.Tensor, eps: float, norm: str = "linf", width: int = 32, blocks: int = 2,
                 size: tuple[int, int] | None = None) -> None:
        super().__init__()
        c = codes.shape[1]
        self.size = tuple(size) if size is not None else tuple(codes.shape[-2:])
        self.register_buffer("codes", codes.clone())
        self.eps = float(eps)
        self.norm = norm
        self.net = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True),
            *[ResBlock(width) for _ in range(blocks)],
            nn.Conv2d(width, c, 3, padding=1),
        )

    @property
    def num_codes(self) -> int:
        return int(self.codes.shape[0])

    def forward(self) -> torch.Tensor:
        """All K perturbations ``(K, C, H, W)`` in [0, 1] image units, within the budget."""
        out = self.net(self.codes)
        if tuple(out.shape[-2:]) != self.size:  # codes coarser than the image: smooth, patch-like patterns
            out = F.interpolate(out, size=self.size, mode="bilinear", align_corners=False)
        raw = torch.tanh(out)
        if self.norm == "linf":
            return raw * self.eps
        flat = raw.flatten(1)
        scale = (self.eps / flat.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)  # project onto the L2 ball
        return (flat * scale[:, None]).view_as(raw)
