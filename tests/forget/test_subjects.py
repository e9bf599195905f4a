from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from unlearnable.data.formats.mrbrains import read_csv, read_mrbrains, write_csv, write_mrbrains
from unlearnable.data.phantoms import brain_phantoms, parse_spec
from unlearnable.data.subjects import (
    MRBRAINS_CLASSES,
    MRBRAINS_SCORED,
    SubjectSet,
    load_subjects,
    normalise_intensity,
    parse_shape,
    split_by_id,
)
from unlearnable.errors import UserError


def test_phantoms_are_deterministic_and_labelled(tiny_subjects: SubjectSet) -> None:
    s = tiny_subjects
    assert s.images.shape == (6, 1, 16, 16, 16) and s.images.dtype == torch.uint8
    assert s.labels.shape == (6, 16, 16, 16) and s.classes == ("background", "csf", "gm", "wm")
    assert s.scored == (1, 2, 3) and s.meta["synthetic"]
    for i in range(len(s)):  # every tissue present in every subject
        assert (torch.bincount(s.labels[i].flatten(), minlength=4) > 0).all()
    again = brain_phantoms(n=6, size=16)
    assert torch.equal(again.images, s.images) and torch.equal(again.labels, s.labels)
    assert not torch.equal(s.images[0], s.images[1])  # individualised
    assert not torch.equal(s.labels[0], s.labels[1])


def test_phantom_spec_parsing() -> None:
    assert parse_spec("brain-phantoms:n=5,size=20")["n"] == 5
    with pytest.raises(UserError, match="bad option"):
        parse_spec("brain-phantoms:count=5")


def test_mrbrains_round_trip(tmp_path, tiny_subjects: SubjectSet) -> None:
    s = tiny_subjects.subset([0, 1, 2])
    s3 = SubjectSet(s.images.repeat(1, 3, 1, 1, 1), s.labels, ("070", "4", "1"), MRBRAINS_CLASSES,
                    MRBRAINS_SCORED, ("T1", "IR", "FLAIR"), meta={"labels": "mrbrains18"})
    write_mrbrains(s3, tmp_path)
    assert (tmp_path / "070" / "pre" / "FLAIR.nii.gz").exists() and (tmp_path / "070" / "segm.nii.gz").exists()
    back = read_mrbrains(tmp_path)
    assert back.ids == ("1", "4", "070")  # natural order, ids kept as written
    order = [s3.ids.index(i) for i in back.ids]
    assert torch.equal(back.images, s3.images[order]) and torch.equal(back.labels, s3.labels[order])
    assert back.scored == tuple(range(1, 9)) and back.num_classes == 11  # labels 9, 10 not scored
    assert load_subjects(str(tmp_path)).ids == back.ids


def test_csv_round_trip_and_resample(tmp_path, tiny_subjects: SubjectSet) -> None:
    s = tiny_subjects.subset([0, 1]).with_splits(["train", "test"])
    path = write_csv(s, tmp_path / "subjects.csv")
    back = read_csv(path)
    assert back.ids == s.ids and back.splits == ("train", "test") and back.modalities == ("T1",)
    assert torch.equal(back.images, s.images) and torch.equal(back.labels, s.labels)
    small = load_subjects(str(path), shape=(8, 8, 8))
    assert small.shape == (8, 8, 8) and set(small.labels.unique().tolist()) <= {0, 1, 2, 3}


def test_raw_intensities_are_normalised(tmp_path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(500, 100, (12, 12, 12)).astype(np.float32)
    lab = (raw > 500).astype(np.int16)
    (tmp_path / "a" / "pre").mkdir(parents=True)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(tmp_path / "a" / "pre" / "T1.nii.gz"))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / "a" / "segm.nii.gz"))
    s = read_mrbrains(tmp_path, modalities=("T1",))  # T1.nii.gz: the older name, read as an alias
    assert s.images.dtype == torch.uint8 and int(s.images.max()) == 255 and int(s.images.min()) == 0
    assert torch.equal(s.images[0], normalise_intensity(raw[None]))


def _write_one(root, sid, files, img_shape=(8, 8, 8), lab_shape=(8, 8, 8)) -> None:
    (root / sid / "pre").mkdir(parents=True)
    for f in files:
        nib.save(nib.Nifti1Image(np.zeros(img_shape, np.uint8), np.eye(4)), str(root / sid / "pre" / f))
    nib.save(nib.Nifti1Image(np.zeros(lab_shape, np.uint8), np.eye(4)), str(root / sid / "segm.nii.gz"))


def test_missing_modality_is_a_user_error(tmp_path) -> None:
    _write_one(tmp_path, "1", ["reg_T1.nii.gz", "reg_IR.nii.gz", "FLAIR.nii.gz"])
    _write_one(tmp_path, "070", ["reg_T1.nii.gz", "reg_IR.nii.gz"])
    with pytest.raises(UserError, match="070/pre/FLAIR.nii.gz: missing .subject 070 has no FLAIR image, other"):
        read_mrbrains(tmp_path)
    with pytest.raises(UserError, match="070/pre/FLAIR.nii.gz: missing .* named in --modalities IR,FLAIR"):
        read_mrbrains(tmp_path, modalities=("IR", "FLAIR"))
    assert read_mrbrains(tmp_path, modalities=("IR", "T1")).modalities == ("IR", "T1")


def test_label_shape_mismatch_is_a_user_error(tmp_path) -> None:
    _write_one(tmp_path, "1", ["reg_T1.nii.gz"], lab_shape=(8, 8, 7))
    with pytest.raises(UserError, match="label map shape"):
        read_mrbrains(tmp_path)


def test_csv_missing_modality_cell(tmp_path, tiny_subjects: SubjectSet) -> None:
    path = write_csv(tiny_subjects.subset([0]), tmp_path / "s.csv")
    rows = list(csv.reader(open(path)))
    rows[1][2] = ""
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(UserError, match="subject synth-000: missing modality T1"):
        read_csv(path)


def test_split_by_id_is_order_free_and_by_subject() -> None:
    ids = [f"s{i}" for i in range(10)]
    a = dict(zip(ids, split_by_id(ids, 0.3, seed=1), strict=True))
    b = dict(zip(ids[::-1], split_by_id(ids[::-1], 0.3, seed=1), strict=True))
    assert a == b and list(a.values()).count("test") == 3
    with pytest.raises(UserError):
        split_by_id(ids, 1.0)


def test_subject_set_checks_and_lookup(tiny_subjects: SubjectSet) -> None:
    with pytest.raises(UserError, match="did you mean 'synth-001'"):
        tiny_subjects.index_of(["synth-01"])
    with pytest.raises(UserError, match="does not match"):
        SubjectSet(tiny_subjects.images, tiny_subjects.labels[:, :8], tiny_subjects.ids, tiny_subjects.classes,
                   (1,), ("T1",))
    assert parse_shape("32") == (32, 32, 32) and parse_shape("8,16,16") == (8, 16, 16)
