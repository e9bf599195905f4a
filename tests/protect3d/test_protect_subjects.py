"""``protect SUBJECTS``: the output keeps every file's header, type and scaling; the budget holds in each image's
own window after re-quantisation; labels and held-out subjects are copied byte for byte; same key, same bytes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tests.forget.conftest import exit_code
from tests.protect3d.conftest import TINY, scanner_folder

from unlearnable.data.subjectset import intensity_window
from unlearnable.protect3d import VOLUME_METHODS
from unlearnable.protect3d.budget import apply_delta

EPS = 4 / 255


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f":
        return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))
    return bool(np.array_equal(a, b))


def _protect(src: str, out: Path, *args: str) -> int:
    return exit_code(["protect", src, "--method", *args, "--out", str(out), "--key", str(out) + ".key"])


def test_scanner_files_keep_header_dtype_scaling_and_the_budget(tmp_path) -> None:
    src = scanner_folder(tmp_path / "training")
    out = tmp_path / "prot"
    assert _protect(str(src), out, "noise3d", "--eps", "4/255", "--test-fraction", "0.25") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "subjects" and "key" not in json.dumps(m).replace("key_fingerprint", "")
    assert not any((out / sid / "orig").exists() for sid in m["splits"])  # unprotected copies are not written
    held = [s for s, sp in m["splits"].items() if sp == "test"]
    assert len(held) == 1 and m["metrics"]["protected"] == 3
    for sid, split in m["splits"].items():
        assert (out / sid / "segm.nii.gz").read_bytes() == (src / sid / "segm.nii.gz").read_bytes()
        for name in ("reg_T1.nii.gz", "reg_IR.nii.gz", "FLAIR.nii.gz"):
            a, b = nib.load(str(src / sid / "pre" / name)), nib.load(str(out / sid / "pre" / name))
            if split == "test":
                assert (out / sid / "pre" / name).read_bytes() == (src / sid / "pre" / name).read_bytes()
                continue
            for field in a.header.keys():  # every header field, scl_slope/scl_inter (NaN when unscaled) included
                assert _same(a.header[field], b.header[field]), (name, field)
            assert b.get_data_dtype() == a.get_data_dtype() and np.array_equal(b.affine, a.affine)
            clean, prot = np.asarray(a.dataobj, dtype=np.float64), np.asarray(b.dataobj, dtype=np.float64)
            lo, hi = intensity_window(np.asarray(a.dataobj))
            change = np.abs(prot - clean)
            assert change.max() <= EPS * (hi - lo) * (1 + 1e-12), (name, change.max(), EPS * (hi - lo))
            assert change.max() > 0.5 * EPS * (hi - lo)  # the budget is used, not wasted
            rec = m["subjects"][sid]["budget"][{"reg_T1.nii.gz": "T1", "reg_IR.nii.gz": "IR"}.get(name, "FLAIR")]
            assert math.isclose(rec["budget"], EPS * (hi - lo), rel_tol=1e-6) and rec["max_change"] <= rec["budget"]
        if split == "train":
            assert 30 < m["subjects"][sid]["psnr_db"] < 80 and 0.9 < m["subjects"][sid]["ssim"] < 1
    assert m["budget_rule"].startswith("|protected - clean| <= eps * (hi - lo)")


def test_apply_delta_quantises_within_the_budget() -> None:
    rng = np.random.default_rng(0)
    vals = rng.integers(-32768, 32767, 4096).astype(np.float64) * 0.7 + 3.0  # int16 scaled by 0.7, +3
    delta = rng.uniform(-0.1, 0.1, 4096)  # far beyond eps: must be clipped
    done = apply_delta(vals, delta, EPS, (0.0, 1000.0), np.dtype(np.int16), 0.7, 3.0)
    k = np.floor(EPS * 1000 / 0.7)
    stored = np.rint((done.values - 3.0) / 0.7)
    assert np.allclose(stored, np.rint(stored)) and stored.min() >= -32768 and stored.max() <= 32767
    assert np.abs(stored - np.rint((vals - 3.0) / 0.7)).max() == k and done.max_change <= EPS * 1000
    f32 = rng.normal(500, 200, 4096).astype(np.float32)
    done = apply_delta(f32, rng.uniform(-1, 1, 4096), EPS, (0.0, 997.3), np.dtype(np.float32))
    assert np.abs(done.values.astype(np.float32).astype(np.float64) - f32).max() <= EPS * 997.3
    u8 = np.array([0, 1, 254, 255, 128], dtype=np.uint8)
    done = apply_delta(u8, np.array([-1.0, -1.0, 1.0, 1.0, 0.01]), EPS, (0.0, 255.0), np.dtype(np.uint8))
    assert done.values.dtype == np.uint8 and done.values.tolist() == [0, 0, 255, 255, 131]


@pytest.mark.parametrize("method", VOLUME_METHODS.names())
def test_same_key_same_bytes_and_labels_untouched(method, tmp_path) -> None:
    extra = [a for k, v in VOLUME_METHODS.get(method).test_params.items() for a in ("-p", f"{k}={v}")]
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = ["protect", TINY, "--method", method, "--eps", "8/255", "--out", str(out), "--key",
                str(tmp_path / "k.key"), *extra]
        assert exit_code(args) == 0
        outs.append(json.loads((out / "manifest.json").read_text()))
    assert outs[0]["output"]["sha256"] == outs[1]["output"]["sha256"]
    assert exit_code(["protect", TINY, "--method", method, "--eps", "8/255", "--out", str(tmp_path / "c"), *extra]) == 0
    other = json.loads((tmp_path / "c" / "manifest.json").read_text())["output"]["sha256"]
    images = [f for f in other if "/pre/" in f and outs[0]["splits"][f.split("/")[0]] == "train"]
    assert images and any(other[f] != outs[0]["output"]["sha256"][f] for f in images)  # another key, other noise
    labels = [f for f in other if f.endswith("segm.nii.gz")]
    assert all(other[f] == outs[0]["output"]["sha256"][f] for f in labels)  # label maps never depend on the key
    for rec in outs[0]["subjects"].values():
        if rec["protected"]:
            assert rec["budget"]["T1"]["max_change"] <= rec["budget"]["T1"]["budget"] == 8.0


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys) -> None:
    src = scanner_folder(tmp_path / "training", ids=("1", "2", "3"))
    out = tmp_path / "out"
    cases = [
        ([str(tmp_path / "training"), "--method", "noise3d", "--eps", "64/255"], "eps"),
        ([str(tmp_path / "training"), "--method", "seg-emm"], "did you mean"),
        ([str(tmp_path / "training"), "--method", "noise3d", "--size", "32"], "--size"),
        ([TINY, "--method", "seg-em", "-p", "patch=12"], "patch=12"),
        ([TINY, "--method", "noise3d", "--splits", "val"], "split 'val'"),
        ([str(tmp_path / "training" / "1" / "pre"), "--method", "seg-em"], "not a subjects source"),
    ]
    for args, needle in cases:
        capsys.readouterr()
        assert exit_code(["protect", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
        assert not out.exists() and not (tmp_path / "out.key").exists() and not (tmp_path / ".out.partial").exists()
    (src / "list.csv").write_text("id,label,T1\n1,../elsewhere/segm.nii.gz,1/pre/reg_T1.nii.gz\n"
                                  "2,2/segm.nii.gz,2/pre/reg_T1.nii.gz\n3,3/segm.nii.gz,3/pre/reg_T1.nii.gz\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "segm.nii.gz").write_bytes((src / "1" / "segm.nii.gz").read_bytes())
    capsys.readouterr()
    assert exit_code(["protect", str(src / "list.csv"), "--method", "noise3d", "--out", str(out)]) == 2
    assert "outside" in capsys.readouterr().err and not out.exists()


def test_csv_layout_is_repeated(tmp_path) -> None:
    src = scanner_folder(tmp_path / "data", ids=("a", "b", "c"))
    rows = ["id,label,T1,FLAIR,split"] + [f"{s},{s}/segm.nii.gz,{s}/pre/reg_T1.nii.gz,{s}/pre/FLAIR.nii.gz,"
                                         f"{'test' if s == 'c' else 'train'}" for s in "abc"]
    (src / "subjects.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "prot"
    assert _protect(str(src / "subjects.csv"), out, "slice-freq", "--eps", "4/255") == 0
    assert (out / "subjects.csv").read_bytes() == (src / "subjects.csv").read_bytes()
    m = json.loads((out / "manifest.json").read_text())
    assert m["splits"] == {"a": "train", "b": "train", "c": "test"} and m["load"]["data"] == "subjects.csv"
    assert (out / "c" / "pre" / "FLAIR.nii.gz").read_bytes() == (src / "c" / "pre" / "FLAIR.nii.gz").read_bytes()
    assert (out / "a" / "pre" / "FLAIR.nii.gz").read_bytes() != (src / "a" / "pre" / "FLAIR.nii.gz").read_bytes()
