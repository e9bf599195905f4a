"""What a voxel's own intensity gives away: how well labels are read from each voxel's intensity alone, and how many
voxels a budget can move across that rule's boundaries.

The 3D counterpart of :mod:`unlearnable.audit.cues`. The 3D efficacy table (docs/methods.md, "3D segmentation
subjects") found every method within 1% of clean on the brain phantoms, whose tissue a voxel's intensity names; a
segmenter reads that in its first epochs, before any shortcut an additive perturbation can add. ``audit-seg``
writes this check beside its Dice table so a user can see which regime their data is in:

* the **intensity rule**: every voxel's intensities (one value per modality, quantised to at most :data:`CELLS`
  cells) are looked up in a table that gives each cell the label most training voxels in it carry (fitted on the
  clean training subjects; a cell no training voxel fell in takes the nearest labelled cell's); its Dice on the clean
  held-out subjects, scored like the segmenters (mean over the scored labels and over subjects, each at its own
  shape);
* **near**: the share of the held-out subjects' scored-label voxels whose cell lies within the budget
  (``eps x 255`` model levels in every modality) of a cell the rule labels otherwise: the only voxels an additive
  change within the budget can carry across the rule's boundaries.

When the rule alone comes close to the clean-trained segmenter and few voxels are near a boundary, a victim that
reads intensity keeps most of its Dice whatever a protection within the budget does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.subjects import SubjectSet
from ..forget.metrics import dice_per_class

CELLS = 4096  # at most this many intensity cells: 256 levels for one modality, 16 per modality for three


def levels_per_modality(channels: int) -> int:
    """Quantisation levels per modality so that the joint table has at most :data:`CELLS` cells."""
    return max(2, min(256, int(round(CELLS ** (1 / channels)))))


def _cells(images: torch.Tensor, q: int) -> torch.Tensor:
    """``(N, C, D, H, W)`` uint8 → ``(N, D, H, W)`` int64 cell index (row-major over modalities)."""
    lv = images.long() * q // 256
    cell = lv[:, 0]
    for c in range(1, images.shape[1]):
        cell = cell * q + lv[:, c]
    return cell


def _shifts(channels: int, reach: int) -> torch.Tensor:
    """Every non-zero offset within ``reach`` cells in each modality, ``(M, C)``."""
    grid = torch.cartesian_prod(*[torch.arange(-reach, reach + 1)] * channels).reshape(-1, channels)
    return grid[grid.abs().sum(1) > 0]


def _pairs(shift: torch.Tensor, q: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index slices ``(a, b)`` such that cell ``b`` is cell ``a`` moved by ``shift`` (both inside the grid)."""
    a = tuple(slice(max(0, -int(s)), q - max(0, int(s))) for s in shift)
    b = tuple(slice(max(0, int(s)), q - max(0, -int(s))) for s in shift)
    return a, b


def _fill(table: torch.Tensor, q: int, channels: int, default: int) -> torch.Tensor:
    """Cells no training voxel fell in (``-1``) take the label of the nearest labelled cell (grown one cell at a
    time, so the rule's boundaries fall midway between the labels' intensities); ``default`` if none is labelled."""
    grid = table.reshape((q,) * channels).clone()
    if not bool((grid >= 0).any()):
        return torch.full_like(table, default)
    while bool((grid < 0).any()):
        new = grid.clone()
        for shift in _shifts(channels, 1):
            a, b = _pairs(shift, q)
            take = (new[a] < 0) & (grid[b] >= 0)
            new[a] = torch.where(take, grid[b], new[a])
        grid = new
    return grid.flatten()


def _neighbours_differ(table: torch.Tensor, q: int, channels: int, reach: int) -> torch.Tensor:
    """``(q ** C,)`` bool: cells with a cell within ``reach`` levels in every modality that the table labels
    otherwise."""
    grid = table.reshape((q,) * channels)
    differ = torch.zeros_like(grid, dtype=torch.bool)
    for shift in _shifts(channels, reach):
        a, b = _pairs(shift, q)
        differ[a] |= grid[a] != grid[b]
    return differ.flatten()


def intensity_cues(subjects: SubjectSet, train: Sequence[int], held: SubjectSet, eps: float | None = None,
                   reference_dice: float | None = None) -> dict[str, Any]:
    """The intensity rule fitted on ``subjects[train]`` and scored on ``held`` (see the module docstring); with an
    L-inf budget ``eps`` (a fraction of 255), the share of held-out scored voxels near its boundaries; with the
    clean-trained segmenter's Dice ``reference_dice``, the rule's share of it."""
    k, c = subjects.num_classes, subjects.images.shape[1]
    q = levels_per_modality(c)
    counts = torch.zeros(q ** c, k, dtype=torch.long)
    for i in train:  # one subject at a time: the training volumes are never copied whole
        cells = _cells(subjects.images[i:i + 1], q).flatten()
        counts.index_put_((cells, subjects.labels[i].flatten().long()), torch.ones_like(cells), accumulate=True)
    seen = counts.sum(1) > 0
    table = _fill(torch.where(seen, counts.argmax(1), -1), q, c, int(counts.sum(0).argmax()))
    scored = list(held.scored)
    dice, per_label, near_n, total_n = [], torch.zeros(len(scored), dtype=torch.float64), 0, 0
    reach = None
    if eps is not None and eps > 0:
        reach = -((-int(round(eps * 255)) * q) // 256)  # budget in model levels → cells, rounded up
        differ = _neighbours_differ(table, q, c, reach)
    for i in range(len(held)):
        image, labels = held.native(i)
        cell = _cells(image[None], q)[0]
        pred = table[cell]
        d = dice_per_class(pred, labels, k)[scored].double()
        dice.append(float(d.mean()))
        per_label += d
        if reach is not None:
            mask = torch.isin(labels, torch.tensor(scored))
            near_n += int(differ[cell[mask]].sum())
            total_n += int(mask.sum())
    rule = sum(dice) / len(dice) if dice else float("nan")
    out: dict[str, Any] = {
        "rule": (f"each voxel's label looked up from its intensity ({q} levels per modality, "
                 f"{len(scored)} scored labels)"),
        "rule_dice": round(rule, 4), "cells_seen": int(seen.sum()),
        # per scored label, mean over held-out subjects: which labels intensity names and which it does not
        "per_label": [{"label": subjects.classes[j], "dice": round(float(v) / max(len(held), 1), 4)}
                      for j, v in zip(scored, per_label, strict=True)]}
    if reference_dice:
        out["reference_dice"] = round(float(reference_dice), 4)
        out["rule_share"] = round(rule / float(reference_dice), 4)
    if reach is not None:
        out["budget_levels"] = round(float(eps) * 255, 2)
        out["near"] = round(near_n / total_n, 4) if total_n else None
    out["summary"] = describe(out)
    return out


def describe(cues: dict[str, Any]) -> str:
    """One sentence for the log and the report."""
    text = f"a voxel-wise intensity rule alone scores Dice {cues['rule_dice']:.3f} on the held-out subjects"
    if cues.get("reference_dice"):
        text += f" ({cues['rule_share']:.0%} of the clean-trained segmenter's {cues['reference_dice']:.3f})"
    if cues.get("near") is not None:
        text += (f"; {cues['near']:.1%} of their labelled voxels lie within the budget ({cues['budget_levels']:g} "
                 "levels) of its boundaries, the only ones a change within it can carry across")
    return text
