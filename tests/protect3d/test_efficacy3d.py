"""Efficacy on small phantoms (slow): the audit tells data a segmenter cannot learn from data it can, the random
control does not protect, and the open goal (seg-em halving the clean model's Dice at 8/255) is tracked."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tests.forget.conftest import exit_code

SMALL = "brain-phantoms:n=8,size=32"
TRAIN = ["--model", "unet", "--width", "8", "--patch", "32", "--epochs", "8", "--device", "cpu"]


def _audit(prot: Path, out: Path) -> dict:
    assert exit_code(["audit-seg", "--protected", str(prot), "--clean", SMALL, "--out", str(out), *TRAIN]) == 0
    return json.loads((out / "results.json").read_text())["runs"]["none"]


@pytest.mark.slow
def test_audit_seg_tells_unlearnable_from_learnable_data(tmp_path) -> None:
    prot = tmp_path / "noise"
    assert exit_code(["protect", SMALL, "--method", "noise3d", "--eps", "8/255", "--out", str(prot)]) == 0
    control = _audit(prot, tmp_path / "a-noise")
    assert control["clean"]["dice"] > 0.3  # the recipe learns something from clean subjects
    assert control["dice_ratio"] > 0.8  # random noise of the same budget does not protect
    # the extreme "protection": training images blanked (labels kept) -- the audit must see the model fail
    m = json.loads((prot / "manifest.json").read_text())
    for sid, split in m["splits"].items():
        if split == "train":
            f = prot / sid / "pre" / "reg_T1.nii.gz"
            img = nib.load(str(f))
            nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), None, img.header), str(f))
    blank = _audit(prot, tmp_path / "a-blank")
    assert blank["clean"]["dice"] == pytest.approx(control["clean"]["dice"])  # same recipe, same clean model
    # measured 0.54: even from blank images a UNet learns where tissues lie from the volume's borders and position
    assert blank["dice_ratio"] < 0.75


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="open goal, measured not met (docs/methods.md, 3D section): seg-em at 8/255 does not halve "
                   "the clean-trained model's Dice on phantoms; strict, so a fix shows up here")
def test_seg_em_halves_dice_at_8_of_255(tmp_path) -> None:
    prot = tmp_path / "em"
    assert exit_code(["protect", SMALL, "--method", "seg-em", "--eps", "8/255", "--out", str(prot), "-p",
                      "rounds=3", "-p", "pgd_steps=5"]) == 0
    assert _audit(prot, tmp_path / "a-em")["dice_ratio"] <= 0.5
