"""NIfTI written faithfully, and MRBrainS18 read as published (issue 12 items 4 and 5)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import scanner_affine, scanner_nifti
from unlearnable.data.formats.mrbrains import read_csv, read_mrbrains, write_csv, write_mrbrains
from unlearnable.data.formats.nifti import read_volume, write_volume
from unlearnable.data.subjects import MRBRAINS_CLASSES, MRBRAINS_SCORED, load_subjects
from unlearnable.errors import UserError

FIELDS = ("qform_code", "sform_code", "xyzt_units", "descrip", "intent_code", "intent_name", "pixdim", "dim",
          "datatype", "bitpix", "srow_x", "srow_y", "srow_z", "quatern_b", "quatern_c", "quatern_d")
IDS = ("1", "4", "5", "7", "14", "070", "148")  # the published training ids, as folder names


def _scanner_file(path, data: np.ndarray, slope: float = 1.0, inter: float = 0.0, dtype=np.int16) -> None:
    """A file as a scanner pipeline writes it: int16, scaled, qform 1 / sform 2, mm + s, a description."""
    scanner_nifti(path, data, dtype, slope, inter, descrip=b"FLAIR 3T bias corrected")


def test_write_volume_keeps_header_type_and_scaling(tmp_path) -> None:
    stored = np.random.default_rng(0).integers(-300, 900, (16, 16, 16))
    _scanner_file(tmp_path / "in.nii.gz", stored, slope=2.0, inter=-5.0)
    values, head = read_volume(tmp_path / "in.nii.gz")
    assert np.array_equal(values, stored * 2.0 - 5.0)
    write_volume(tmp_path / "out.nii.gz", values, head)
    a, b = nib.load(str(tmp_path / "in.nii.gz")), nib.load(str(tmp_path / "out.nii.gz"))
    for f in FIELDS:
        assert np.array_equal(a.header[f], b.header[f]), f
    assert b.get_data_dtype() == np.int16 and (b.dataobj.slope, b.dataobj.inter) == (2.0, -5.0)
    assert np.array_equal(b.dataobj.get_unscaled(), a.dataobj.get_unscaled())  # the same stored integers
    assert np.allclose(b.affine, scanner_affine()) and np.array_equal(b.get_qform(), a.get_qform())
    with pytest.raises(UserError, match="cannot be stored as int16"):  # refused, not clipped or rescaled
        write_volume(tmp_path / "bad.nii.gz", values + 0.5, head)


def test_monai_load_image_reads_what_we_write(tmp_path) -> None:
    monai = pytest.importorskip("monai.transforms", reason="MONAI is a dependency; skipped only where absent")
    s = load_subjects("brain-phantoms:n=3,size=16,channels=3")
    write_mrbrains(s, tmp_path)
    img = monai.LoadImage(image_only=True)(str(tmp_path / "synth-001" / "pre" / "reg_IR.nii.gz"))
    assert tuple(img.shape) == (16, 16, 16) and np.array_equal(np.asarray(img), s.images[1, 1].numpy())
    assert np.allclose(np.asarray(img.affine), s.meta["affines"][1])
    seg = monai.LoadImage(image_only=True)(str(tmp_path / "synth-001" / "segm.nii.gz"))
    assert np.array_equal(np.asarray(seg), s.labels[1].numpy())


def _published(root, ids=IDS, labels_max=10) -> None:
    """The MRBrainS18 training release at 8³: pre/ (registered), orig/ (ignored), segm.nii.gz."""
    rng = np.random.default_rng(1)
    for sid in ids:
        for name in ("reg_T1.nii.gz", "reg_IR.nii.gz", "FLAIR.nii.gz"):
            _scanner_file(root / sid / "pre" / name, rng.integers(0, 1000, (8, 8, 8)))
        _scanner_file(root / sid / "orig" / "FLAIR.nii.gz", rng.integers(0, 9, (4, 4, 4)))  # other grid
        lab = rng.integers(0, labels_max + 1, (8, 8, 8))
        _scanner_file(root / sid / "segm.nii.gz", lab, dtype=np.uint8)


def test_published_layout_modalities_and_one_label_scheme(tmp_path) -> None:
    _published(tmp_path / "training")
    s = load_subjects(str(tmp_path / "training"))
    assert s.ids == IDS and s.modalities == ("T1", "IR", "FLAIR") and s.channels == 3
    assert s.classes == MRBRAINS_CLASSES and s.scored == MRBRAINS_SCORED == tuple(range(1, 9))
    picked = load_subjects(str(tmp_path / "training"), modalities=("FLAIR", "T1"))
    assert picked.modalities == ("FLAIR", "T1") and torch.equal(picked.images[:, 0], s.images[:, 2])
    assert load_subjects(str(tmp_path / "training"), modalities=("T1_IR",)).modalities == ("IR",)  # alias
    # the CSV route over the same files: same classes, same scored labels, same voxels
    csv_path = tmp_path / "training" / "subjects.csv"
    csv_path.write_text("id,label,T1,IR,FLAIR\n" + "".join(
        f"{i},{i}/segm.nii.gz,{i}/pre/reg_T1.nii.gz,{i}/pre/reg_IR.nii.gz,{i}/pre/FLAIR.nii.gz\n" for i in IDS))
    c = read_csv(csv_path)
    assert (c.classes, c.scored, c.ids) == (s.classes, s.scored, s.ids) and c.hashes() == s.hashes()


def test_written_labels_name_their_scheme(tmp_path) -> None:
    s = load_subjects("brain-phantoms:n=3,size=16")
    path = write_csv(s, tmp_path / "p" / "subjects.csv")  # segm.nii.gz, yet the phantoms' 4 classes
    for back in (read_csv(path), read_mrbrains(tmp_path / "p")):
        assert back.classes == s.classes and back.scored == s.scored and back.hashes() == s.hashes()
    assert nib.load(str(tmp_path / "p" / "synth-000" / "segm.nii.gz")).header.get_intent()[2] == "brain-phantoms"


def test_bad_mrbrains_inputs_name_the_file(tmp_path) -> None:
    _published(tmp_path / "a", ids=("1",), labels_max=12)
    with pytest.raises(UserError, match=r"1/segm.nii.gz: label 12 is outside the mrbrains18 labels 0..10"):
        read_mrbrains(tmp_path / "a")
    _published(tmp_path / "b", ids=("1",))
    with pytest.raises(UserError, match="did you mean"):
        read_mrbrains(tmp_path / "b", modalities=("FLAIRR",))
    _published(tmp_path / "c" / "training", ids=("1",))
    with pytest.raises(UserError, match="did you mean .*c/training"):  # the release unzips into training/
        read_mrbrains(tmp_path / "c")
