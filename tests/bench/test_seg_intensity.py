"""bench/seg_intensity.py: the histogram Dice of an intensity rule equals the voxel-wise Dice, and the fitter finds
the cut points that separate classes that do not overlap."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import seg_intensity as B  # noqa: E402


def _voxel_dice(vals, labels, cuts):
    pred = (vals[:, None] >= np.asarray(cuts)[None]).sum(1)  # the number of cut points <= the level
    return float(np.mean([2 * ((pred == c) & (labels == c)).sum() / ((pred == c).sum() + (labels == c).sum())
                          for c in (1, 2, 3)]))


def test_rule_dice_matches_voxelwise_dice():
    g = np.random.default_rng(0)
    labels = g.integers(0, 4, 5000)
    vals = np.clip(labels * 60 + g.normal(0, 30, labels.size), 0, 255).astype(np.int64)
    hist = B.class_hist(vals, labels, 4)
    for cuts in [(30, 90, 150), (10, 20, 250), (100, 101, 102), (90, 30, 150), (-8, 120, 270)]:
        assert abs(B.rule_dice(hist, cuts) - _voxel_dice(vals, labels, cuts)) < 1e-9


def test_fit_rule_separates_disjoint_classes_and_offsets_move_it():
    g = np.random.default_rng(1)
    labels = g.integers(0, 4, 4000)
    vals = (labels * 64 + g.integers(0, 40, labels.size)).astype(np.int64)  # class c in [64c, 64c + 40)
    hist = B.class_hist(vals, labels, 4)
    cuts = B.fit_rule(hist)
    assert B.rule_dice(hist, cuts) == 1.0
    assert all(40 <= c - 64 * i <= 64 for i, c in enumerate(cuts))
    moved = B.shifted(hist, (0, 0, 20, 0))  # grey matter 20 levels brighter: [148, 188), 4 levels below WM
    assert moved.sum() == hist.sum()
    assert 188 <= B.fit_rule(moved)[2] <= 192
