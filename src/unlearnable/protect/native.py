"""Fit at one working size, apply at every image's native size: the rule every method follows in a protect job.

Methods fit on tensors of one size. A protect job therefore fits on a *working view* of the samples to protect
(their common size, or all resized to ``--size`` / :data:`WORK_SIZE`), then applies batch by batch at native size:

- a method with ``size_free = True`` (convolution-style, e.g. CUDA) applies to a native-size batch directly;
- any other method applies to the batch resized to the working size, and the change it made there (in grey levels)
  is resized back to the native size with antialiased bilinear interpolation and added to the native image. Every
  output pixel of that interpolation is a convex combination of input pixels, so ``max |delta|`` cannot grow: an
  L-inf budget that held at the working size still holds (checked on every batch). L2 and L0 budgets are not kept
  by resizing (the perturbation covers more or fewer pixels); the manifest's measured metrics say what was written.

Sample-wise tables are found by sample id and class-wise ones by label, so batches may come in any order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.formats.images import resize
from ..data.imageset import ImageSet, levels_to_uint8
from .base import Protection, add_within_linf, eps_levels

#: Largest default working size when the images to protect differ in size and no ``--size`` is given (the
#: Pets/Flowers studies', whose photographs are all larger).
WORK_SIZE = 224


def default_work_size(sizes: Sequence[tuple[int, int]]) -> int:
    """The working side for images of differing ``(h, w)`` sizes: their median short side, at most
    :data:`WORK_SIZE`. Photographs of a few hundred pixels are worked at 224 as before; a folder of 60-200 px crops is
    not blown up to 224 (which made the fit and a ``--verify`` victim 3x slower and taught them pixels that no
    image has)."""
    short = sorted(min(int(h), int(w)) for h, w in sizes)
    return min(WORK_SIZE, short[len(short) // 2]) if short else WORK_SIZE


def working_size(sizes: Sequence[tuple[int, int]], size: int | None, work_size: int | None = None) -> tuple[int, int]:
    """``--size`` if given, else the one size all ``sizes`` share, else ``work_size`` (default:
    :func:`default_work_size`)."""
    if size:
        return (size, size)
    distinct = set(sizes)
    if len(distinct) == 1:
        return next(iter(distinct))
    w = work_size or default_work_size(sizes)
    return (w, w)


def resize_delta(delta: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Float perturbation ``(B, C, h, w)`` -> ``(B, C, H, W)`` by antialiased bilinear interpolation (convex)."""
    if tuple(delta.shape[-2:]) == tuple(hw):
        return delta
    down = hw[0] < delta.shape[-2] or hw[1] < delta.shape[-1]
    out = F.interpolate(delta, size=hw, mode="bilinear", align_corners=False, antialias=down)
    # The budget argument above rests on this: interpolation weights are non-negative and sum to one.
    assert float(out.abs().max()) <= float(delta.abs().max()) + 1e-4, "perturbation grew when resized"
    return out


def apply_native(algo: Protection, pert: object, batch: ImageSet, hw: tuple[int, int]) -> torch.Tensor:
    """Protected uint8 ``(B, C, H, W)`` for a batch of one native size ``(H, W)``, fitted at working size ``hw``."""
    if batch.size == tuple(hw) or algo.size_free:
        return algo.apply(batch, pert)
    native = batch.images
    small = torch.from_numpy(np.stack([resize(a, hw) for a in native.numpy()]))
    out_small = algo.apply(batch.with_images(small), pert)
    delta = (out_small.to(torch.int16) - small.to(torch.int16)).float()  # grey levels at the working size
    up = resize_delta(delta, batch.size)
    eps = algo.linf_budget()
    if eps is not None:
        out = add_within_linf(native, up / 255.0, eps)
        assert int((out.int() - native.int()).abs().max()) <= eps_levels(eps)
        return out
    return levels_to_uint8((native.float() + up).round_().clamp_(0, 255))


def apply_arrays(algo: Protection, pert: object, arrays: list[np.ndarray], template: ImageSet,
                 hw: tuple[int, int]) -> list[np.ndarray]:
    """Apply to images ``(C, H, W)`` of any sizes; ``template`` gives their labels, ids and splits in order.

    Images are grouped by size so that each group is one batched ``apply`` call.
    """
    out: list[np.ndarray] = [a for a in arrays]
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, a in enumerate(arrays):
        groups.setdefault(tuple(a.shape), []).append(k)
    for ks in groups.values():
        sub = template.subset(ks)
        sub = ImageSet(torch.from_numpy(np.stack([arrays[k] for k in ks])), sub.labels, sub.ids, sub.splits,
                       sub.classes, sub.layout)
        res = apply_native(algo, pert, sub, hw).numpy()
        for j, k in enumerate(ks):
            out[k] = res[j]
    return out
