"""Tiny 3D subjects on disk, written as scanners write them (int16 scaled, float32, uint8 label maps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import scanner_nifti

IDS = ("1", "4", "5", "070")
TINY = "brain-phantoms:n=4,size=16"


def scanner_folder(root: Path, ids=IDS, size: int = 16) -> Path:
    """The MRBrainS18 layout: reg_T1 int16 scaled (slope 2, inter -5), reg_IR int16 unscaled, FLAIR float32,
    segm.nii.gz uint8, and an orig/ scan that protect must not copy."""
    rng = np.random.default_rng(7)
    g = np.indices((size,) * 3).astype(np.float64) - size / 2 + 0.5
    r = np.sqrt((g**2).sum(0)) / (size / 2)
    for k, sid in enumerate(ids):
        lab = np.where(r < 0.9, 1 + (r < 0.6) + (r < 0.3), 0).astype(np.uint8)
        base = 200.0 * lab + rng.normal(0, 15, lab.shape) + 10 * k
        scanner_nifti(root / sid / "pre" / "reg_T1.nii.gz", np.rint((base + 5) / 2), np.int16, 2.0, -5.0)
        scanner_nifti(root / sid / "pre" / "reg_IR.nii.gz", np.rint(base * 3), np.int16)
        scanner_nifti(root / sid / "pre" / "FLAIR.nii.gz", base / 7.0, np.float32)
        scanner_nifti(root / sid / "orig" / "FLAIR.nii.gz", base[::2, ::2, ::2], np.float32)
        scanner_nifti(root / sid / "segm.nii.gz", lab, np.uint8)
    return root
