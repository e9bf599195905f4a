"""Commands that write NIfTI (segment export, segment predict) and bad 3D inputs, through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unlearnable.data.subjects import load_subjects

from .conftest import TINY, TRAIN_ARGS, exit_code

PUBLISHED = {"pre", "pre/reg_T1.nii.gz", "pre/reg_IR.nii.gz", "pre/FLAIR.nii.gz", "segm.nii.gz"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "training"
    assert exit_code(["segment", "export", TINY, "--out", str(out)]) == 0
    return out


def test_export_writes_the_published_layout(exported: Path) -> None:
    assert sorted(d.name for d in exported.iterdir() if d.is_dir()) == [f"synth-{i:03d}" for i in range(6)]
    assert sorted(f.name for f in exported.iterdir() if f.is_file()) == ["config.yaml", "report.html", "report.md"]
    for d in (d for d in exported.iterdir() if d.is_dir()):
        assert {str(f.relative_to(d)) for f in d.rglob("*")} == PUBLISHED
    # the T1 channel read back is, voxel for voxel, the subjects a model trained on TINY learnt
    assert load_subjects(str(exported), modalities=["T1"]).hashes() == load_subjects(TINY).hashes()
    img = nib.load(str(exported / "synth-000" / "pre" / "FLAIR.nii.gz"))
    assert img.get_data_dtype() == np.uint8 and int(img.header["sform_code"]) == 1
    assert img.header.get_xyzt_units() == ("mm", "sec") and b"synthetic" in img.header["descrip"].tobytes()


def test_forget_accepts_the_exported_folder_and_predict_writes_nifti(exported, tiny_model_dir, tmp_path) -> None:
    sid = json.loads((tiny_model_dir / "model.json").read_text())["train_ids"][0]
    out = tmp_path / "forgot"
    assert exit_code(["forget", str(tiny_model_dir), str(exported), "--forget", sid, "--strategy", "finetune",
                      "--epochs", "1", "--out", str(out), "--device", "cpu"]) == 0
    assert (out / "erasure_record.json").exists()
    pred = tmp_path / "pred"
    assert exit_code(["segment", "predict", str(tiny_model_dir), str(exported), "--out", str(pred),
                      "--device", "cpu"]) == 0
    seg = nib.load(str(pred / sid / "segm.nii.gz"))
    src = nib.load(str(exported / sid / "pre" / "reg_T1.nii.gz"))
    assert np.array_equal(seg.affine, src.affine) and seg.shape == src.shape and seg.get_data_dtype() == np.uint8
    assert seg.header.get_intent()[2] == "brain-phantoms" and int(np.asarray(seg.dataobj).max()) <= 3


def _one_line_exit_2(capsys, argv: list[str], needle: str, out: Path) -> None:
    assert exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_missing_modality_named_in_modalities(exported, tmp_path, capsys) -> None:
    import shutil

    root = tmp_path / "training"
    shutil.copytree(exported, root)
    (root / "synth-003" / "pre" / "FLAIR.nii.gz").unlink()
    out = tmp_path / "model"
    _one_line_exit_2(capsys, ["segment", "train", str(root), "--modalities", "T1,FLAIR", "--out", str(out),
                              *TRAIN_ARGS], "synth-003/pre/FLAIR.nii.gz: missing", out)
    assert exit_code(["segment", "export", str(root), "--modalities", "IR,T1", "--out", str(tmp_path / "ok")]) == 0


def test_label_map_on_another_grid(exported, tmp_path, capsys) -> None:
    import shutil

    root = tmp_path / "training"
    shutil.copytree(exported, root)
    seg_path = root / "synth-001" / "segm.nii.gz"
    seg = nib.load(str(seg_path))
    aff = seg.affine.copy()
    aff[0, 3] += 4.0  # shifted by 4 mm
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj), aff, seg.header), str(seg_path))
    out = tmp_path / "model"
    _one_line_exit_2(capsys, ["segment", "train", str(root), "--out", str(out), *TRAIN_ARGS],
                     f"{seg_path}: affine differs from", out)
    _one_line_exit_2(capsys, ["segment", "export", str(root), "--out", str(tmp_path / "e")], "affine differs",
                     tmp_path / "e")
