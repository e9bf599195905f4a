"""LSP: linearly separable synthetic patches (Yu, Zhang, Chen, Yin & Liu, "Availability Attacks Create
Shortcuts", KDD 2022).

Yu et al. show that error-minimising noise works because it is (almost) linearly separable by class, and that
*synthetic* class-wise noise with that property does the same job without any model. Each class gets a coarse
grid of random colour/intensity patches (``patch`` x ``patch`` pixels per cell, values from the key), tiled over
the image (nearest upsampling) and scaled to the budget: max |delta| = eps (L-inf) or ||delta||_2 = eps (L2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from ..errors import UserError
from . import _gradient as G
from .base import METHODS, Protection
from .keys import Key
from .noise import NoiseTable


@METHODS.register("lsp")
class LinearlySeparablePatches(Protection):
    """Class-wise random patch colours tiled over the image, scaled to an L-inf or L2 budget (model-free)."""

    summary = "class-wise random colour patches, linearly separable shortcuts (Yu et al., KDD 2022); model-free"
    fit_reads_pixels = False

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        norm: str = "linf"  # linf | l2
        patch: int = 0  # side of one patch cell in pixels; 0 -> a 4 x 4 grid (paper: 8 px at 32 x 32)

        def validate(self) -> None:
            G.check_budget(self.eps, self.norm)
            if self.patch < 0:
                raise UserError(f"--param patch={self.patch}: must be >= 0 (0 = image side / 4)")

    def fit(self, data: ImageSet, key: Key) -> NoiseTable:
        p = self.params
        h, w = data.size
        side = p.patch or max(1, -(-max(h, w) // 4))
        gh, gw = -(-h // side), -(-w // side)
        g = key.generator("lsp/patches")
        # One random colour in [-1, 1] per (class, channel, cell); nearest upsampling tiles it over the image.
        cells = torch.rand(data.num_classes, data.channels, gh, gw, generator=g) * 2 - 1
        delta = F.interpolate(cells, scale_factor=side, mode="nearest")[..., :h, :w]
        if p.norm == "linf":
            delta = delta / delta.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1) * p.eps
        else:
            delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * p.eps
        return G.make_table(delta, p.eps, p.norm, "classwise", data)

    def apply(self, data: ImageSet, perturbation: NoiseTable) -> torch.Tensor:
        return G.apply_table(data, perturbation)
