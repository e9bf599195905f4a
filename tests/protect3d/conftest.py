"""Tiny 3D subjects on disk, written as scanners write them (int16 scaled, float32, uint8 label maps)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

IDS = ("1", "4", "5", "070")
TINY = "brain-phantoms:n=4,size=16"


def affine() -> np.ndarray:
    a = np.diag([0.958, 0.958, 3.0, 1.0])
    a[:3, 3] = [-120.5, -110.0, -30.0]
    return a


def scanner_file(path: Path, data: np.ndarray, dtype, slope: float | None = None, inter: float = 0.0) -> None:
    """qform 1 / sform 2, mm + s, a description; ``slope`` None leaves the file unscaled (NaN scl_slope)."""
    img = nib.Nifti1Image(data.astype(dtype), None)
    h = img.header
    h.set_data_dtype(dtype)
    h.set_qform(affine(), 1)
    h.set_sform(affine(), 2)
    h.set_xyzt_units("mm", "sec")
    h["descrip"] = b"3T scanner, bias corrected"
    if slope is not None:
        h.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def scanner_folder(root: Path, ids=IDS, size: int = 16) -> Path:
    """The MRBrainS18 layout: reg_T1 int16 scaled (slope 2, inter -5), reg_IR int16 unscaled, FLAIR float32,
    segm.nii.gz uint8, and an orig/ scan that protect must not copy."""
    rng = np.random.default_rng(7)
    g = np.indices((size,) * 3).astype(np.float64) - size / 2 + 0.5
    r = np.sqrt((g**2).sum(0)) / (size / 2)
    for k, sid in enumerate(ids):
        lab = np.where(r < 0.9, 1 + (r < 0.6) + (r < 0.3), 0).astype(np.uint8)
        base = 200.0 * lab + rng.normal(0, 15, lab.shape) + 10 * k
        scanner_file(root / sid / "pre" / "reg_T1.nii.gz", np.rint((base + 5) / 2), np.int16, 2.0, -5.0)
        scanner_file(root / sid / "pre" / "reg_IR.nii.gz", np.rint(base * 3), np.int16)
        scanner_file(root / sid / "pre" / "FLAIR.nii.gz", base / 7.0, np.float32)
        scanner_file(root / sid / "orig" / "FLAIR.nii.gz", base[::2, ::2, ::2], np.float32)
        scanner_file(root / sid / "segm.nii.gz", lab, np.uint8)
    return root
