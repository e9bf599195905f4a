"""Oxford-IIIT Pet and Flowers102 outputs load in torchvision's own classes, unchanged, at native size."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from helpers import make_images, run_cli
from unlearnable.data.formats.images import reencode
from unlearnable.errors import UserError

tv = pytest.importorskip("torchvision.datasets")

PETS = ["Abyssinian_1", "Abyssinian_2", "great_pyrenees_1", "great_pyrenees_2", "Abyssinian_3", "great_pyrenees_3"]
SIZES = [(20, 24), (18, 16), (20, 20)]  # (H, W): photos come in many sizes


def _photo(i: int, seed: int = 0) -> np.ndarray:
    h, w = SIZES[i % len(SIZES)]
    x, _ = make_images(1, 3, max(h, w), 2, seed=seed + i)
    return x[0][:h, :w]


def make_pets(root: Path) -> Path:
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    for i, n in enumerate(PETS):
        img = _photo(i)
        Image.fromarray(img).save(base / "images" / f"{n}.jpg", quality=90)
        tri = np.full(img.shape[:2], 2, np.uint8)
        tri[2:-2, 2:-2] = 1
        tri[4:6, :] = 3
        Image.fromarray(tri).save(base / "annotations" / "trimaps" / f"{n}.png")
    lines = [f"{n} {1 if n.startswith('Aby') else 2} {1 if n.startswith('Aby') else 2} 1" for n in PETS]
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines[:4]) + "\n")
    (base / "annotations" / "test.txt").write_text("\n".join(lines[4:]) + "\n")
    return root


def make_flowers(root: Path, n: int = 8) -> Path:
    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(_photo(i, seed=7)).save(base / "jpg" / f"image_{i + 1:05d}.jpg", quality=90)
    # The published layout: 1-based labels (1, N) and 1-based integer image ids per split, as (1, n) rows.
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 2, 3, 1, 2, 3, 1, 2][:n]], dtype=np.uint8)})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 2, 3, 4]], dtype=np.uint16),
                                 "valid": np.array([[5, 6]], dtype=np.uint16),
                                 "tstid": np.array([[7, 8]], dtype=np.uint16)})
    return root


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def _flowers_class(monkeypatch, base: Path):
    """torchvision checks the .mat files' MD5s against the published ones: point it at this tiny root's own, so
    the output must hold byte-identical copies to pass."""
    files = dict(tv.Flowers102._file_dict, label=("imagelabels.mat", _md5(base / "imagelabels.mat")),
                 setid=("setid.mat", _md5(base / "setid.mat")))
    monkeypatch.setattr(tv.Flowers102, "_file_dict", files)
    return tv.Flowers102


def test_pets_output_loads_in_torchvision_with_categories_and_trimaps(tmp_path, capsys):
    src = make_pets(tmp_path / "src")
    out = tmp_path / "out"
    code, _, err = run_cli(["protect", str(src), "-m", "cuda", "-o", str(out)], capsys)
    assert code == 0, err
    for split in ("trainval", "test"):
        a = tv.OxfordIIITPet(src, split=split, target_types=["category", "segmentation"])
        b = tv.OxfordIIITPet(out, split=split, target_types=["category", "segmentation"])
        assert len(a) == len(b) and a.classes == b.classes == ["Abyssinian", "Great Pyrenees"]
        for i in range(len(a)):
            (ia, (ca, sa)), (ib, (cb, sb)) = a[i], b[i]
            assert ca == cb and ia.size == ib.size == sb.size  # native size, trimap matches
            assert np.array_equal(np.asarray(sa), np.asarray(sb))
            same = np.array_equal(np.asarray(ia), np.asarray(ib))
            assert same == (split == "test"), (split, i)
    for n in PETS[4:]:  # the unprotected split is copied byte for byte
        assert (out / "oxford-iiit-pet/images" / f"{n}.jpg").read_bytes() == \
            (src / "oxford-iiit-pet/images" / f"{n}.jpg").read_bytes()
    man = json.loads((out / "manifest.json").read_text())
    assert man["load"]["size"] is None and man["images"]["size"] == "native"
    assert man["images"]["image_format"] == "png" and man["image_shape"] == [3, None, None]


def test_pets_with_size_resizes_images_and_trimaps_nearest(tmp_path, capsys):
    src = make_pets(tmp_path / "src")
    out = tmp_path / "out"
    code, _, err = run_cli(["protect", str(src), "-m", "random", "-o", str(out), "--size", "16"], capsys)
    assert code == 0, err
    ds = tv.OxfordIIITPet(out, split="trainval", target_types=["category", "segmentation"])
    for img, (_, seg) in ds:
        assert img.size == seg.size == (16, 16)
        assert set(np.unique(np.asarray(seg)).tolist()) <= {1, 2, 3}  # nearest neighbour: no new labels
    assert json.loads((out / "manifest.json").read_text())["load"]["size"] == 16


def test_flowers102_output_loads_in_torchvision(tmp_path, capsys, monkeypatch):
    src = make_flowers(tmp_path / "src")
    out = tmp_path / "out"
    code, _, err = run_cli(["protect", str(src), "-m", "cuda", "-o", str(out)], capsys)
    assert code == 0, err
    cls = _flowers_class(monkeypatch, src / "flowers-102")
    for split, protected in (("train", True), ("val", False), ("test", False)):
        a, b = cls(src, split=split), cls(out, split=split)
        assert a._labels == b._labels and len(a) == len(b) > 0
        for i in range(len(a)):
            assert a[i][0].size == b[i][0].size
            assert np.array_equal(np.asarray(a[i][0]), np.asarray(b[i][0])) != protected
    assert sorted(p.name for p in (out / "flowers-102/jpg").iterdir())[0] == "image_00001.jpg"


@pytest.mark.parametrize("fmt,lossless", [("png", True), ("keep", False), ("jpeg:80", False)])
def test_reencode_round_trips_through_the_codec(fmt, lossless):
    x = torch.from_numpy(make_images(3, 3, 16, 2)[0]).permute(0, 3, 1, 2).contiguous()
    y = reencode(x, fmt)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(x, y) == lossless
    if not lossless:
        assert (x.int() - y.int()).abs().float().mean() < 20  # still the same picture


def test_lossy_image_format_warns_once_and_is_recorded(tmp_path, capsys):
    src = make_pets(tmp_path / "src")
    out = tmp_path / "out"
    code, _, err = run_cli(["protect", str(src), "-m", "random", "-o", str(out), "--image-format", "jpeg:90"], capsys)
    assert code == 0, err
    assert err.count("saved lossily") == 1
    man = json.loads((out / "manifest.json").read_text())
    assert man["images"]["image_format"] == "jpeg:90"
    head = (out / "oxford-iiit-pet/images/Abyssinian_1.jpg").read_bytes()[:3]
    assert head == b"\xff\xd8\xff"  # real JPEG bytes


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _bad_roots(tmp_path: Path) -> list[tuple[list[str], str]]:
    no_ann = make_pets(tmp_path / "noann")
    import shutil

    shutil.rmtree(no_ann / "oxford-iiit-pet" / "annotations")
    extra = make_flowers(tmp_path / "extra")
    Image.new("RGB", (8, 8)).save(extra / "flowers-102/jpg/image_00009.jpg")  # 9 images, 8 labels
    ids = make_flowers(tmp_path / "ids")
    savemat(ids / "flowers-102/setid.mat", {"trnid": np.array([[1, 2, 3, 4]]), "valid": np.array([[5, 6]]),
                                            "tstid": np.array([[7, 12]])})
    gone = make_flowers(tmp_path / "gone")
    (gone / "flowers-102/jpg/image_00003.jpg").rename(gone / "flowers-102/jpg/image_00010.jpg")
    return [
        ([str(no_ann)], "oxford-iiit-pet/annotations: missing"),
        ([str(extra)], "imagelabels.mat: 8 labels for 9 images"),
        ([str(ids)], "setid.mat: image id 12 out of range 1..8"),
        ([str(gone)], "setid.mat: image id 3 has no file"),
        ([str(make_pets(tmp_path / "fmt")), "--image-format", "gif"], "--image-format gif: expected keep, png"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_bad_roots_are_one_line_exit_2_and_write_nothing(case, tmp_path, capsys):
    args, message = _bad_roots(tmp_path)[case]
    before = _listing(tmp_path)
    code, out, err = run_cli(["protect", args[0], "-m", "cuda", "-o", str(tmp_path / "out"), *args[1:]], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert _listing(tmp_path) == before


EVAL = ["--model", "smallcnn", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]


def test_evaluate_native_pets_output_trains_at_the_fit_size_and_says_so(tmp_path, capsys):
    src = make_pets(tmp_path / "src")
    out = tmp_path / "out"
    code, _, err = run_cli(["protect", str(src), "-m", "cuda", "-o", str(out), "--work-size", "16"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", "--protected", str(out), "--clean", str(src), "-o", str(tmp_path / "r"),
                            *EVAL], capsys)
    assert code in (0, 3), err  # 3: a one-epoch victim on six images need not beat chance
    assert "images come in 3 sizes (16x18 to 24x20): resized to 16x16 on load" in err
    res = json.loads((tmp_path / "r/results.json").read_text())
    assert res["image_size"]["trained_at"] == [16, 16] and res["image_size"]["resized"]
    assert "fitted at" in res["image_size"]["note"]
    # --size chooses; the clean set is resized to match
    code, _, err = run_cli(["evaluate", "--protected", str(out), "--clean", str(src), "-o", str(tmp_path / "r12"),
                            "--size", "12", *EVAL], capsys)
    assert code in (0, 3), err
    res = json.loads((tmp_path / "r12/results.json").read_text())
    assert res["image_size"] == {"trained_at": [12, 12], "resized": True, "note": None}
    assert "sizes" not in err


def test_evaluate_plain_mixed_size_root_uses_the_default_working_size(tmp_path, capsys):
    """Without a manifest there is no fit size: the default working size (the images' median short side, at most
    224: protect's own default) is used, and the log says so."""
    from unlearnable.protect.run import load_output

    src = make_pets(tmp_path / "src")
    ds, manifest = load_output(src, fit_mixed=True)
    assert manifest is None and ds.size == (20, 20) and ds.meta["resized"]  # sizes 16x18 to 24x20
    assert "resized to 20x20 on load, the default working size" in ds.meta["size_note"]
    with pytest.raises(UserError, match="different sizes"):
        load_output(src)  # without fit_mixed (library callers that need native pixels) mixed sizes still refuse
