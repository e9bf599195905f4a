"""Standard 3D training augmentations as a defence against protected data: flips, intensity shift, smoothing.

:class:`Augment3d` wraps a segmenter and augments its input in training mode only. A flip is applied to the input
and undone on the logits, which is the same as training on the flipped (image, label) pair (the voxel-wise loss
does not care where a voxel sits), so labels never need touching. Randomness comes from torch's global RNG, which
the training run seeds, so a run is reproducible.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def gaussian_blur3d(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, C, D, H, W)`` with ``sigma`` voxels (replicate padding)."""
    r = max(1, int(round(2 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = g.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)], pad[2 * (2 - axis) + 1] = r, r
        x = F.conv3d(F.pad(x, pad, mode="replicate"), g.view(shape).expand(c, 1, *shape[2:]), groups=c)
    return x


class Augment3d(nn.Module):
    """Random flips on each axis (p = ``flip``), intensity scale/shift (uniform ±``scale``, ±``shift``) and, with
    probability ``smooth``, Gaussian smoothing with sigma uniform in ``sigma``; inputs ``(B, C, D, H, W)`` in [0, 1]."""

    def __init__(self, net: nn.Module, flip: float = 0.5, shift: float = 0.1, scale: float = 0.1,
                 smooth: float = 0.5, sigma: tuple[float, float] = (0.5, 1.0)):
        super().__init__()
        self.net = net
        self.flip, self.shift, self.scale, self.smooth, self.sigma = flip, shift, scale, smooth, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.net(x)
        b = x.shape[0]
        dims = [d for d in (2, 3, 4) if float(torch.rand(())) < self.flip]
        if dims:
            x = x.flip(dims)
        gain = 1 + (torch.rand(b, 1, 1, 1, 1) * 2 - 1) * self.scale
        offset = (torch.rand(b, 1, 1, 1, 1) * 2 - 1) * self.shift
        x = x * gain.to(x) + offset.to(x)
        if float(torch.rand(())) < self.smooth:
            lo, hi = self.sigma
            x = gaussian_blur3d(x, lo + float(torch.rand(())) * (hi - lo))
        out = self.net(x)
        return out.flip(dims) if dims else out
