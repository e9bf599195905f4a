"""OPS: the one-pixel shortcut (Wu, Chen, Chen & Xie, "One-Pixel Shortcut", ICLR 2023).

Every image of class ``k`` gets one pixel, at a class-specific position, set to an extreme colour (each channel 0
or 255). The position is drawn from the key (distinct per class); each channel's extreme is the one *farther* from
that class's mean value at that pixel, so the pixel stands out for every image of the class. (Wu et al. search
position and colour to maximise this deviation over the whole image; we draw the position from the key so the
shortcut stays a secret and keep their colour rule.)

OPS is an **L0** perturbation (one pixel per image), not L-inf bounded: that pixel can change by up to 255 grey
levels, so :meth:`linf_budget` is ``None`` and the protect manifest reports the measured L-inf instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.imageset import ImageSet
from ..errors import UserError
from .base import METHODS, Protection
from .keys import Key


@dataclass(frozen=True)
class OnePixel:
    """Per class: pixel ``(row, col)`` ``(K, 2)`` and colour ``(K, C)`` in {0, 255}."""

    position: torch.Tensor
    colour: torch.Tensor


@METHODS.register("ops")
class OnePixelShortcut(Protection):
    """One key-positioned pixel per class set to an extreme colour (L0 = 1 pixel, model-free)."""

    summary = "one pixel per class at a secret position set to an extreme colour (Wu et al., ICLR 2023); L0"

    @dataclass(frozen=True)
    class Params:
        pass

    def fit(self, data: ImageSet, key: Key) -> OnePixel:
        h, w = data.size
        k = data.num_classes
        g = key.generator("ops/position")
        flat = torch.randperm(h * w, generator=g)[: min(k, h * w)]
        if k > h * w:  # more classes than pixels: positions must repeat (colour still differs by class mean)
            flat = torch.cat([flat, torch.randint(0, h * w, (k - h * w,), generator=g)])
        pos = torch.stack([flat // w, flat % w], 1)
        colour = torch.empty(k, data.channels, dtype=torch.uint8)
        tie = torch.randint(0, 2, (k, data.channels), generator=g)
        for c in range(k):
            vals = data.images[data.labels == c][:, :, pos[c, 0], pos[c, 1]].float()  # (n_c, C)
            mean = vals.mean(0) if len(vals) else torch.full((data.channels,), 127.5)
            colour[c] = torch.where(mean < 127.5, 255, torch.where(mean > 127.5, 0, tie[c] * 255)).to(torch.uint8)
        return OnePixel(pos, colour)

    def apply(self, data: ImageSet, perturbation: OnePixel) -> torch.Tensor:
        pos, colour = perturbation.position, perturbation.colour
        if len(data) and int(data.labels.max()) >= len(pos):
            raise UserError(f"labels: class {int(data.labels.max())} has no pixel ({len(pos)} fitted)")
        out = data.images.clone()
        n = torch.arange(len(data))
        r, c = pos[data.labels, 0], pos[data.labels, 1]
        out[n, :, r, c] = colour[data.labels]
        return out

    def linf_budget(self) -> float | None:
        return None  # L0 attack: one pixel, any amount


def changed_pixels(clean: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """Number of changed pixel positions per image ``(N,)`` (the L0 norm OPS bounds to 1)."""
    return (clean != protected).any(1).flatten(1).sum(1)
