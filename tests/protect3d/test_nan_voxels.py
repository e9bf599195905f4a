"""Scanner volumes with NaN voxels (outside a registration's field of view): read as background, left as NaN in the
protected file, and kept out of the window, the budget check and the quality measures."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
from tests.forget.conftest import exit_code
from tests.protect3d.conftest import scanner_folder

from helpers import scanner_nifti
from unlearnable.data.subjects import load_subjects
from unlearnable.data.subjectset import intensity_window


def test_nan_voxels_stay_nan_and_the_rest_is_protected_within_the_budget(tmp_path) -> None:
    src = scanner_folder(tmp_path / "training")
    for sid in ("1", "4", "5", "070"):
        p = src / sid / "pre" / "FLAIR.nii.gz"
        a = np.asarray(nib.load(str(p)).dataobj).astype(np.float32)
        a[:3] = np.nan
        scanner_nifti(p, a, np.float32)
    s = load_subjects(str(src))
    assert s.images.dtype.is_floating_point is False and int(s.images[:, 2, :3].max()) == 0  # NaN reads as floor
    out = tmp_path / "prot"
    assert exit_code(["protect", str(src), "--method", "noise3d", "--eps", "8/255", "--out", str(out),
                      "--test-fraction", "0.25"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert math.isfinite(m["metrics"]["psnr_db_mean"]) and math.isfinite(m["metrics"]["ssim_mean"])
    for sid, split in m["splits"].items():
        clean = np.asarray(nib.load(str(src / sid / "pre" / "FLAIR.nii.gz")).dataobj, dtype=np.float64)
        prot = np.asarray(nib.load(str(out / sid / "pre" / "FLAIR.nii.gz")).dataobj, dtype=np.float64)
        assert np.array_equal(np.isnan(clean), np.isnan(prot))
        lo, hi = intensity_window(clean)
        assert math.isfinite(lo) and math.isfinite(hi)
        change = np.abs(prot - clean)[np.isfinite(clean)]
        assert change.max() <= 8 / 255 * (hi - lo) * (1 + 1e-9)
        assert (change.max() > 0) == (split == "train")
