from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from helpers import make_images, write_folder
from unlearnable.data import detect_format, load, save
from unlearnable.errors import UserError


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("fixture", ["npz_path", "rgb_npz_path"])
def test_npz_round_trip_is_exact(fixture, request, tmp_path):
    src = request.getfixturevalue(fixture)
    ds = load(src)
    assert ds.split_names() == ["train", "val", "test"]
    out = tmp_path / "out"
    out.mkdir()
    (written,) = save(ds, out)
    assert written.name == src.name
    a, b = _arrays(src), _arrays(written)
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]), k
    compressed = {zipfile.ZipFile(p).infolist()[0].compress_type for p in (src, written)}
    assert len(compressed) == 1  # same compression as the source


def test_npz_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.npz"
    x, y = make_images(4, 1, 8, 2)
    np.savez(bad, train_images=x, train_labels=y[:3, None])
    with pytest.raises(UserError, match=r"bad.npz: 'train_labels' has 3 labels for 4 images"):
        load(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="junk.npz: not a readable .npz"):
        load(tmp_path / "junk.npz")
    np.savez(tmp_path / "nokeys.npz", foo=x)
    with pytest.raises(UserError, match="no '<split>_images'"):
        load(tmp_path / "nokeys.npz")


def test_folder_split_layout_round_trip_copies_unchanged_files(folder_path, tmp_path):
    ds = load(folder_path)
    assert ds.classes == ("cat", "dog") and set(ds.split_names()) == {"train", "test"}
    changed = ds.images.clone()
    train = ds.indices("train")
    changed[train] = 255 - changed[train]
    prot = ds.with_images(changed)
    out = tmp_path / "out"
    out.mkdir()
    written = save(prot, out, original=ds)
    rel = sorted(str(p.relative_to(out)) for p in written)
    assert rel == sorted(str(p.relative_to(folder_path)) for p in folder_path.rglob("*.png"))
    back = load(out)
    assert back.ids == ds.ids and torch.equal(back.images, prot.images)
    test_file = next((folder_path / "test").rglob("*.png"))
    assert (out / test_file.relative_to(folder_path)).read_bytes() == test_file.read_bytes()


def test_folder_class_layout_has_a_stable_seeded_split(tmp_path):
    root = write_folder(tmp_path / "cls", split_layout=False, per_class=10)
    a, b = load(root, seed=3), load(root, seed=3)
    assert a.splits == b.splits and {"train", "test"} == set(a.split_names())
    assert load(root, seed=4).splits != a.splits


def test_changed_images_keep_their_names_as_lossless_png_bytes(tmp_path):
    root = write_folder(tmp_path / "jpg", suffix=".jpg")
    ds = load(root)
    prot = ds.with_images(255 - ds.images)
    out = tmp_path / "out"
    out.mkdir()
    written = save(prot, out, original=ds)
    assert sorted(p.relative_to(out) for p in written) == sorted(p.relative_to(root) for p in root.rglob("*.jpg"))
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)  # PNG content, .jpg name
    assert torch.equal(load(out).images, prot.images)  # lossless: the perturbation survives


def test_folder_errors(tmp_path):
    root = write_folder(tmp_path / "f")
    bad = root / "train" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match="broken.png: not a readable image"):
        load(root)
    bad.unlink()
    Image.new("RGB", (20, 20)).save(root / "train" / "cat" / "big.png")
    with pytest.raises(UserError, match="different sizes.*--size"):
        load(root)
    assert load(root, size=16).images.shape[-1] == 16
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(UserError, match=r"a: class folder has no images$"):
        load(empty)
    # a hospital export of DICOM files: the message says what was found and what to do instead
    for name in ("1.dcm", "2.dcm", "notes.txt"):
        (empty / "a" / name).write_bytes(b"")
    with pytest.raises(UserError, match=r"class folder has no images \(found 2 \.dcm files: DICOM is not read: "
                                        r"export the slices as PNG"):
        load(empty)


def test_unknown_and_missing_sources(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load(tmp_path / "nope.npz")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(UserError, match="unknown format"):
        load(tmp_path / "x.csv")
    assert detect_format("mnist5k") == "builtin"


def _pets(root: Path) -> Path:
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    x, _ = make_images(6, 3, 20, 2)
    names = ["Abyssinian_1", "Abyssinian_2", "great_pyrenees_1", "great_pyrenees_2", "Abyssinian_3",
             "great_pyrenees_3"]
    for i, n in enumerate(names):
        Image.fromarray(x[i]).save(base / "images" / f"{n}.jpg")
    lines = [f"{n} {1 if n.startswith('Aby') else 2} 1 1" for n in names]
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines[:4]) + "\n")
    (base / "annotations" / "test.txt").write_text("\n".join(lines[4:]) + "\n")
    return root


def _flowers(root: Path) -> Path:
    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    x, _ = make_images(6, 3, 20, 3)
    for i in range(6):
        Image.fromarray(x[i]).save(base / "jpg" / f"image_{i + 1:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 2, 3, 1, 2, 3]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4]]),
                                 "tstid": np.array([[5, 6]])})
    return root


@pytest.mark.parametrize("maker,fmt,n_classes", [(_pets, "pets", 2), (_flowers, "flowers102", 3)])
def test_torchvision_roots_read_and_mirror(maker, fmt, n_classes, tmp_path):
    root = maker(tmp_path / "root")
    assert detect_format(root) == fmt
    ds = load(root, size=16)
    assert ds.num_classes == n_classes and ds.images.shape[1:] == (3, 16, 16)
    if fmt == "pets":
        assert ds.classes == ("Abyssinian", "Great Pyrenees")
    train = ds.indices("train")
    changed = ds.images.clone()
    changed[train] = 255 - changed[train]
    out = tmp_path / "out"
    out.mkdir()
    save(ds.with_images(changed), out, original=ds)
    back = load(out, size=16)
    assert back.ids == ds.ids and torch.equal(back.images[train], changed[train])


def test_nifti_sources_are_registered_formats_and_never_taken_for_2d(tmp_path):
    """The 3D subject sources (MRBrainS18 folders, CSVs of NIfTI paths) are FORMATS entries with ``dims = 3``:
    ``load_subjects`` finds them through the registry, and 2D detection never picks one."""
    from unlearnable.data.formats import FORMATS
    from unlearnable.data.formats.mrbrains import write_mrbrains
    from unlearnable.data.subjects import load_subjects, volume_formats

    assert set(volume_formats()) == {"mrbrains", "nifti-csv"}
    s = load_subjects("brain-phantoms:n=3,size=16")
    root = write_mrbrains(s, tmp_path / "mr")
    back = load_subjects(str(root))
    assert back.ids == s.ids and torch.equal(back.labels, s.labels)
    assert FORMATS.get("mrbrains").detect(root) and not FORMATS.get("nifti-csv").detect(root)
    with pytest.raises(UserError, match="no such file"):
        load_subjects(str(tmp_path / "missing.csv"))
    from unlearnable.data.io import DETECT_ORDER
    assert not set(DETECT_ORDER) & set(volume_formats())


def test_npz_rows_written_in_blocks_give_the_same_archive(npz_path, tmp_path, monkeypatch):
    """The writer hands rows to deflate in blocks; a block smaller than one row must still give the same arrays."""
    from unlearnable.data.formats.npz import NpzWriter

    ds = load(npz_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (one,) = save(ds, tmp_path / "a")
    monkeypatch.setattr(NpzWriter, "BLOCK", 7)
    (two,) = save(ds, tmp_path / "b")
    assert one.read_bytes() == two.read_bytes()  # deflate's output does not depend on how its input was cut
    a = _arrays(npz_path)
    assert all(np.array_equal(a[k], v) for k, v in _arrays(two).items())


def test_png_is_written_lossless_and_about_as_small_as_pillows_default():
    """The run-length strategy that makes PNG writes ~3x cheaper must not make files noticeably bigger on photographs
    or change a pixel."""
    import io

    from skimage import data as skdata

    from unlearnable.data.formats.images import decode, encode

    photo = skdata.astronaut()[100:324, 150:374]  # 224 x 224 RGB
    chw = np.ascontiguousarray(photo.transpose(2, 0, 1))
    ours = encode(chw, "PNG")
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    assert np.array_equal(decode(ours, False, "x.png"), chw)
    assert len(ours) <= 1.05 * buf.tell()
