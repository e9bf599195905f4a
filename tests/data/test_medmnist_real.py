"""MedMNIST outputs load in the ``medmnist`` package's own dataset classes, unchanged, from the output folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import make_images, run_cli

medmnist = pytest.importorskip("medmnist")

SPLITS = {"train": 12, "val": 4, "test": 6}


def write_published(path: Path, c: int, size: int, classes: int) -> Path:
    """An archive in the published layout: ``{split}_images`` uint8 ``(N, H, W)`` (grey) or ``(N, H, W, 3)``,
    ``{split}_labels`` uint8 ``(N, 1)``, compressed, in the key order of the released files."""
    arrays = {}
    for k, (split, n) in enumerate(SPLITS.items()):
        x, y = make_images(n, c, size, classes, seed=k)
        arrays[f"{split}_images"] = x
        arrays[f"{split}_labels"] = y.astype(np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def _tiny_counts(monkeypatch, flag: str) -> None:
    """The real classes assert the published sample counts in ``len()``: state this tiny archive's counts so that
    ``len`` (and a DataLoader) work; the file itself is what is under test."""
    monkeypatch.setitem(medmnist.INFO, flag, dict(medmnist.INFO[flag], n_samples=dict(SPLITS)))


@pytest.mark.parametrize("cls_name,c,size,classes", [
    ("PathMNIST", 3, 28, 9),  # RGB, file pathmnist.npz
    ("PneumoniaMNIST", 1, 28, 2),  # grey, file pneumoniamnist.npz
    ("PathMNIST", 3, 64, 9),  # a larger release, file pathmnist_64.npz, opened with size=64
])
def test_protected_archive_loads_in_the_real_medmnist_class(cls_name, c, size, classes, tmp_path, capsys,
                                                          monkeypatch):
    cls = getattr(medmnist, cls_name)
    name = f"{cls.flag}{'' if size == 28 else f'_{size}'}.npz"
    src = write_published(tmp_path / "src" / name, c, size, classes)
    out = tmp_path / "out"
    code, _, err = run_cli(["protect", str(src), "-m", "cuda", "-o", str(out)], capsys)
    assert code == 0, err
    assert (out / name).is_file()
    assert json.loads((out / "manifest.json").read_text())["load"]["data"] == name
    _tiny_counts(monkeypatch, cls.flag)
    for split in SPLITS:
        a = cls(split=split, root=str(src.parent), download=False, size=size)
        b = cls(split=split, root=str(out), download=False, size=size)
        assert len(a) == len(b) == SPLITS[split]
        assert b.imgs.dtype == np.uint8 and b.imgs.shape == a.imgs.shape
        assert b.labels.dtype == a.labels.dtype and np.array_equal(a.labels, b.labels)
        for i in range(len(b)):
            (ia, ya), (ib, yb) = a[i], b[i]
            assert ib.mode == ("RGB" if c == 3 else "L") and ib.size == (size, size)
            assert np.array_equal(ya, yb)
            assert np.array_equal(np.asarray(ia), np.asarray(ib)) == (split != "train"), (split, i)
        rgb = cls(split=split, root=str(out), download=False, size=size, as_rgb=True)
        assert rgb[0][0].mode == "RGB"
    # the unprotected splits' members are byte-identical to the source's, the archive keeps its key order
    with zipfile.ZipFile(src) as zs, zipfile.ZipFile(out / name) as zo:
        assert zs.namelist() == zo.namelist()
        for member in zs.namelist():
            same = zs.read(member) == zo.read(member)
            assert same == (member != "train_images.npy"), member


def test_real_class_reads_output_through_a_dataloader(tmp_path, capsys, monkeypatch):
    """What a training script does with the output: a transform to tensors and batches from a DataLoader."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision.transforms import ToTensor

    src = write_published(tmp_path / "src" / "pneumoniamnist.npz", 1, 28, 2)
    out = tmp_path / "out"
    code, _, err = run_cli(["protect", str(src), "-m", "random", "-o", str(out), "--splits", "all"], capsys)
    assert code == 0, err
    _tiny_counts(monkeypatch, "pneumoniamnist")
    ds = medmnist.PneumoniaMNIST(split="val", root=str(out), transform=ToTensor(), download=False)
    x, y = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert x.shape == (SPLITS["val"], 1, 28, 28) and x.dtype == torch.float32 and y.shape == (SPLITS["val"], 1)
    clean = medmnist.PneumoniaMNIST(split="val", root=str(src.parent), transform=ToTensor(), download=False)
    diff = (x - next(iter(DataLoader(clean, batch_size=len(clean))))[0]).abs()
    assert 0 < float(diff.max()) <= 8 / 255 + 1e-6  # protected (--splits all) within random noise's default budget
