"""Subjects of different shapes (scanners and protocols differ; FLARE-style CT sets): ``protect`` fits them padded to
one extent and writes every volume at its own shape and grid, and ``audit-seg`` scores each at its own shape."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tests.forget.conftest import exit_code
from tests.protect3d.conftest import scanner_folder

from unlearnable.data.subjects import load_subjects
from unlearnable.data.subjectset import intensity_window
from unlearnable.errors import UserError

SIZES = {"1": 16, "2": 20, "3": 12, "4": 18}  # subject "3" is the smallest: padded on every axis


def _mixed(root: Path) -> Path:
    for sid, size in SIZES.items():
        scanner_folder(root, ids=(sid,), size=size)
    return root


def test_loading_pads_only_when_asked_and_gives_each_subject_back(tmp_path) -> None:
    src = _mixed(tmp_path / "training")
    with pytest.raises(UserError, match="different shapes.*pass --shape"):  # segment/forget: resample or refuse
        load_subjects(str(src))
    s = load_subjects(str(src), pad=True)
    assert s.shape == (20, 20, 20) and [s.native_shape(i) for i in range(4)] == [(n,) * 3 for n in SIZES.values()]
    image, labels = s.native(2)
    assert image.shape[1:] == labels.shape == (12, 12, 12)
    assert int(s.labels[2, 12:].abs().sum()) == 0 and int(s.images[2, :, :, 12:].abs().sum()) == 0  # zero padding
    sub = s.subset([3, 2])  # the shapes follow the subjects
    assert [sub.native_shape(i) for i in range(2)] == [(18,) * 3, (12,) * 3]


@pytest.mark.parametrize("method", ["noise3d", "seg-em"])
def test_protect_writes_every_volume_at_its_own_shape_within_the_budget(method, tmp_path) -> None:
    src = _mixed(tmp_path / "training")
    out = tmp_path / "prot"
    extra = ["-p", "rounds=1", "-p", "epochs=1", "-p", "pgd_steps=1", "-p", "width=4", "-p", "patch=16"] \
        if method == "seg-em" else []
    assert exit_code(["protect", str(src), "--method", method, "--eps", "8/255", "--out", str(out),
                      "--test-fraction", "0.25", *extra]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["native_shapes"] == {sid: [n] * 3 for sid, n in SIZES.items()}
    assert m["metrics"]["protected"] == 3
    for sid, split in m["splits"].items():
        assert (out / sid / "segm.nii.gz").read_bytes() == (src / sid / "segm.nii.gz").read_bytes()
        for name in ("reg_T1.nii.gz", "reg_IR.nii.gz", "FLAIR.nii.gz"):
            a, b = nib.load(str(src / sid / "pre" / name)), nib.load(str(out / sid / "pre" / name))
            assert b.shape == a.shape == (SIZES[sid],) * 3 and np.array_equal(b.affine, a.affine)
            assert b.get_data_dtype() == a.get_data_dtype()
            clean, prot = np.asarray(a.dataobj, dtype=np.float64), np.asarray(b.dataobj, dtype=np.float64)
            lo, hi = intensity_window(np.asarray(a.dataobj))
            change = np.abs(prot - clean).max()
            assert change <= 8 / 255 * (hi - lo) * (1 + 1e-12)
            assert (change > 0) == (split == "train"), (sid, name)  # held-out subjects are copied as they are


def test_audit_seg_scores_held_out_subjects_at_their_own_shape(tmp_path, monkeypatch) -> None:
    from unlearnable.protect3d import audit as audit_mod

    src = _mixed(tmp_path / "training")
    prot = tmp_path / "prot"
    assert exit_code(["protect", str(src), "--method", "noise3d", "--out", str(prot), "--test-fraction", "0.5"]) == 0
    seen = []
    real = audit_mod.evaluate

    def spy(net, images, labels, *a, **k):
        seen.append(tuple(labels.shape[1:]))
        return real(net, images, labels, *a, **k)

    monkeypatch.setattr(audit_mod, "evaluate", spy)
    out = tmp_path / "audit"
    assert exit_code(["audit-seg", "--protected", str(prot), "--clean", str(src), "--out", str(out), "--model",
                      "resnet10", "--width", "4", "--patch", "16", "--epochs", "1", "--device", "cpu"]) == 0
    r = json.loads((out / "results.json").read_text())
    held = r["test_ids"]
    assert sorted(seen) == sorted([(SIZES[s],) * 3 for s in held] * 2)  # each held-out subject, both models, unpadded
    for name in ("clean", "protected"):
        run = r["runs"]["none"][name]
        assert 0 <= run["dice"] <= 1 and len(run["dice_per_class"]) == len(r["scored"])
    assert (out / "audit_seg.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.distributed
def test_mixed_shapes_under_torchrun(tmp_path) -> None:
    """Model-free noise gives one process's bytes; the surrogate method trains data-parallel on the padded subjects
    and writes each at its own shape (its bytes may differ from one process's: gradients are summed in another
    order)."""
    from tests.protect3d.test_resume_ddp import _digests

    from helpers import torchrun
    from helpers import torchrun_status as _exit

    src = _mixed(tmp_path / "training")
    key = str(tmp_path / "k.key")
    assert exit_code(["protect", str(src), "--method", "noise3d", "--key", key, "--out", str(tmp_path / "one")]) == 0
    r = torchrun(["protect", str(src), "--method", "noise3d", "--key", key, "--out", str(tmp_path / "two")], tmp_path)
    assert _exit(r) == 0, r.stderr[-2000:]
    assert _digests(tmp_path / "two") == _digests(tmp_path / "one")
    em = ["--method", "seg-em", "--eps", "8/255", "-p", "rounds=1", "-p", "epochs=1", "-p", "pgd_steps=1",
          "-p", "width=4", "-p", "patch=16", "--key", key]
    r = torchrun(["protect", str(src), *em, "--out", str(tmp_path / "em")], tmp_path)
    assert _exit(r) == 0, r.stderr[-2000:]
    for sid, n in SIZES.items():
        assert nib.load(str(tmp_path / "em" / sid / "pre" / "FLAIR.nii.gz")).shape == (n,) * 3
