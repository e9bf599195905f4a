"""``noise3d``: the key-driven control, random 3D noise of the same budget and no model at all.

``classwise`` (default): each label region (background, CSF, GM, WM, ...) carries its own random pattern, a
``tile``³ block of uniform noise in [-eps, eps] drawn from the key and repeated over the volume; a voxel gets the
pattern of its label. ``samplewise``: i.i.d. uniform noise per voxel, drawn from (key, subject id). The
unlearnable-examples literature reports such noise as the control: a method is only interesting if it beats it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.subjectset import SubjectSet
from ..errors import UserError
from ..protect.keys import Key, sample_seed
from ..registry import look_up_option
from .base import VOLUME_METHODS, VolumeProtection, by_label, check_eps, tile_to


@dataclass(frozen=True)
class Patterns:
    """Class-wise tiles ``(K, C, t, t, t)`` in model units, or the per-subject seed root for samplewise noise."""

    tiles: torch.Tensor | None
    seed: int


@VOLUME_METHODS.register("noise3d")
class RegionNoise3d(VolumeProtection):
    """Random region-wise (per label) or sample-wise 3D noise from the key: the control."""

    summary = "key-driven random 3D noise, class-/region-wise or sample-wise (control)"

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        mode: str = "classwise"  # classwise | samplewise
        tile: int = 8  # edge of the repeated class-wise block (voxels)

        def validate(self) -> None:
            check_eps(self.eps, RegionNoise3d)
            look_up_option(self.mode, ("classwise", "samplewise"), "--param mode")
            if self.tile < 1:
                raise UserError(f"--param tile={self.tile}: must be >= 1")

    def fit(self, train: SubjectSet, key: Key, work: Path | None = None) -> Patterns:
        p = self.params
        if p.mode == "samplewise":
            return Patterns(None, key.seed("noise3d/samplewise"))
        g = key.generator("noise3d/classwise")
        tiles = (torch.rand((train.num_classes, train.channels, p.tile, p.tile, p.tile), generator=g) * 2 - 1) * p.eps
        return Patterns(tiles, 0)

    def delta(self, state: Patterns, train: SubjectSet, i: int) -> torch.Tensor:
        shape = train.shape
        if state.tiles is None:
            g = torch.Generator().manual_seed(sample_seed(state.seed, train.ids[i]))
            return (torch.rand((train.channels, *shape), generator=g) * 2 - 1) * self.params.eps
        full = torch.stack([tile_to(t, shape) for t in state.tiles])
        return by_label(full, train.labels[i])
