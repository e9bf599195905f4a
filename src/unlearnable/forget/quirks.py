"""Subject-specific label quirks: subjects that a segmenter can only get right by having trained on them.

Synthetic brain-phantoms are deformations of one template, so a model that never saw a phantom segments it as well
as one that did, and "forgetting" it changes nothing measurable. ``add_quirks`` gives every subject a few small
spheres ("quirks") inside the brain whose voxels carry a checkerboard texture around the subject's own *code*
(one intensity level per channel) and a label that depends on that code in a way no other subject reveals: codes
are points of an even grid over the channels' levels, dealt to subjects at random, and grid neighbours never share
a label. A model that trained on a subject learns its (code → label) pair; one that did not interpolates from the
codes it knows and gets the quirks wrong. Every subject is quirked alike, so forget and held-out subjects still come
from one population, as a membership attack and the calibrated stop assume.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import torch

from ..data.subjects import SubjectSet

LEVELS = (50, 230)  # uint8 range of the code levels, inside the tissue range so intensity alone does not give it away
TEXTURE = 16  # checkerboard amplitude (uint8): marks a quirk as a quirk, whatever its level


def quirk_codes(n: int, channels: int, classes: tuple[int, ...], seed: int = 0,
                ) -> tuple[list[list[int]], list[int]]:
    """Code (one uint8 level per channel) and quirk label of each of ``n`` subjects.

    Codes are the points of a grid with ``m = ⌈n^(1/channels)⌉`` levels per channel; a point's label is the class
    at (sum of its grid indices) mod K, so codes one grid step apart never share a label; a seeded permutation
    deals the points to the subjects.
    """
    m = max(2, math.ceil(n ** (1.0 / channels) - 1e-9))
    steps = np.round(np.linspace(*LEVELS, m)).astype(int)
    points = list(itertools.product(range(m), repeat=channels))
    pick = np.random.default_rng([seed, 23]).permutation(len(points))[:n]
    codes = [[int(steps[i]) for i in points[p]] for p in pick]
    return codes, [int(classes[sum(points[p]) % len(classes)]) for p in pick]


def add_quirks(s: SubjectSet, blobs: int = 4, radius: int | None = None, seed: int = 0) -> SubjectSet:
    """A copy of ``s`` (``s`` is not modified) where every subject has ``blobs`` quirk spheres of ``radius`` voxels
    (default: a tenth of the volume's side) inside its brain; images ``(N, C, D, H, W)``, labels ``(N, D, H, W)``.

    A quirk's voxels get the subject's code ± ``TEXTURE`` (checkerboard) in each channel and its quirk label
    (:func:`quirk_codes` over the scored classes).
    """
    images, labels = s.images.clone(), s.labels.clone()
    shape = tuple(images.shape[2:])
    r = radius if radius is not None else max(2, round(min(shape) / 10))
    grid = torch.stack(torch.meshgrid(*(torch.arange(d) for d in shape), indexing="ij"))  # (3, D, H, W)
    checker = (grid.sum(0) % 2) * 2 - 1  # ±1, alternating voxel by voxel
    codes, quirk_labels = quirk_codes(len(s), s.channels, tuple(s.scored), seed)
    for i in range(len(s)):
        rng = np.random.default_rng([seed, i, 29])
        brain = torch.nonzero(s.labels[i] > 0)
        mask = torch.zeros(shape, dtype=torch.bool)
        for c in brain[rng.integers(0, len(brain), blobs)]:
            mask |= ((grid - c.view(3, 1, 1, 1)) ** 2).sum(0) <= r * r
        mask &= s.labels[i] > 0  # quirks stay inside the brain: the background is never relabelled
        for c, level in enumerate(codes[i]):
            images[i, c][mask] = (level + TEXTURE * checker[mask]).clamp(0, 255).to(torch.uint8)
        labels[i][mask] = quirk_labels[i]
    meta = {**s.meta, "quirks": {"blobs": blobs, "radius": r, "seed": seed}}
    return replace(s, images=images, labels=labels, meta=meta)
