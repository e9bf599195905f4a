"""Random-noise baselines: sample-wise or class-wise, uniform or sign noise within an L-infinity budget.

These are the controls that unlearnable-example papers report: random noise of the same budget should *not*
stop a model from learning; if it does, the audit recipe is too weak to trust.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.imageset import ImageSet
from ..errors import UserError
from ..perturbation import NoiseTable
from ..registry import look_up_option
from .base import METHODS, Protection, add_within_linf, eps_levels
from .keys import Key


@METHODS.register("random")
class RandomNoise(Protection):
    """Uniform or sign noise, sample-wise or class-wise, within ``eps`` (L-infinity)."""

    summary = "random noise within an L-inf budget, sample-wise or class-wise (baseline control)"
    fit_reads_pixels = False

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        mode: str = "samplewise"  # samplewise | classwise
        dist: str = "uniform"  # uniform | sign

        def validate(self) -> None:
            look_up_option(self.mode, ("samplewise", "classwise"), "--param mode")
            look_up_option(self.dist, ("uniform", "sign"), "--param dist")
            if not 0 < self.eps <= 1:
                raise UserError(f"--param eps={self.eps}: must be in (0, 1] (e.g. 8/255)")

    def fit(self, data: ImageSet, key: Key) -> NoiseTable:
        p = self.params
        k = eps_levels(p.eps)
        g = key.generator(f"random/{p.mode}/{p.dist}")
        rows = data.num_classes if p.mode == "classwise" else len(data)
        shape = (rows, data.channels, *data.size)
        if p.dist == "uniform":
            steps = torch.randint(-k, k + 1, shape, generator=g, dtype=torch.int16)
        else:
            steps = (torch.randint(0, 2, shape, generator=g, dtype=torch.int16) * 2 - 1) * k
        return NoiseTable(steps.to(torch.int8 if k < 128 else torch.int16), p.mode,
                          data.ids if p.mode == "samplewise" else ())

    def apply(self, data: ImageSet, perturbation: NoiseTable) -> torch.Tensor:
        if perturbation.mode == "classwise":
            rows = data.labels
        else:
            pos = {i: r for r, i in enumerate(perturbation.ids)}
            missing = [i for i in data.ids if i not in pos]
            if missing:
                raise UserError(f"sample '{missing[0]}' was not in the data the noise was fitted on")
            rows = torch.tensor([pos[i] for i in data.ids], dtype=torch.long)
        delta = perturbation.steps[rows].float() / 255.0
        return add_within_linf(data.images, delta, self.params.eps)
