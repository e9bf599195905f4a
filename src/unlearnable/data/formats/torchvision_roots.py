"""Oxford-IIIT Pet and Flowers102 as laid out by torchvision under a local root (nothing is downloaded).

- Pets: ``<root>/oxford-iiit-pet/images/<name>.jpg`` + ``annotations/{trainval,test}.txt`` (``name class species
  breed``, class 1-based); trainval -> ``train``.
- Flowers102: ``<root>/flowers-102/jpg/image_00001.jpg`` + ``imagelabels.mat`` + ``setid.mat`` (trnid/valid/tstid).

Outputs mirror the same tree (annotation files copied), so the protected root drops in where the original was.
A protected image is written as ``<name>.png`` (JPEG would erase the perturbation); our readers take either.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ..imageset import ImageSet
from . import FORMATS
from .images import read_images, write_files

PETS_DIR, FLOWERS_DIR = "oxford-iiit-pet", "flowers-102"


def _base(path: Path, name: str) -> Path | None:
    if (path / name).is_dir():
        return path / name
    if path.name == name and path.is_dir():
        return path
    return None


def _find_image(folder: Path, stem: str) -> Path:
    for suffix in (".png", ".jpg", ".jpeg"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    raise UserError(f"{folder / stem}.jpg: image listed in the annotations is missing")


def _build(paths: list[Path], labels: list[int], splits: list[str], classes: list[str], base: Path, fmt: str,
           size: int | None, progress: bool) -> ImageSet:
    images, resized = read_images(paths, size, progress)
    rel = [str(p.relative_to(base)) for p in paths]
    ids = [str(Path(r).with_suffix("")) for r in rel]
    meta = {"format": fmt, "source": str(base), "relpaths": rel, "resized": resized}
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), tuple(ids), tuple(splits), tuple(classes),
                    "NHW" if images.shape[1] == 1 else "NHWC", meta)


def _mirror(ds: ImageSet, out_dir: Path, original: ImageSet | None, copy: list[str]) -> list[Path]:
    base = Path(ds.meta["source"])
    for rel in copy:
        src = base / rel
        if src.exists():
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, out_dir / rel)
    rel = ds.meta["relpaths"]
    return write_files(ds, original, [base / r for r in rel], [out_dir / r for r in rel],
                       force_rewrite=bool(ds.meta.get("resized")))


@FORMATS.register("pets")
class PetsFormat:
    """Oxford-IIIT Pet (37 breeds) from a torchvision root."""

    default_size = 224

    @staticmethod
    def detect(path: Path) -> bool:
        b = _base(path, PETS_DIR)
        return b is not None and (b / "annotations" / "trainval.txt").is_file()

    @staticmethod
    def read(path: Path, size: int | None = None, progress: bool = False, **_: object) -> ImageSet:
        base = _base(path, PETS_DIR)
        assert base is not None
        paths, labels, splits, names = [], [], [], {}
        for fname, split in (("trainval.txt", "train"), ("test.txt", "test")):
            ann = base / "annotations" / fname
            if not ann.is_file():
                continue
            for ln, line in enumerate(ann.read_text().splitlines(), 1):
                if not line.strip() or line.startswith("#"):
                    continue
                parts = line.split()
                if len(parts) < 2 or not parts[1].isdigit():
                    raise UserError(f"{ann}:{ln}: expected '<image> <class id> ...', got '{line.strip()}'")
                stem, cid = parts[0], int(parts[1]) - 1
                names[cid] = " ".join(w.title() for w in stem.rsplit("_", 1)[0].split("_"))
                paths.append(_find_image(base / "images", stem))
                labels.append(cid)
                splits.append(split)
        classes = [names.get(i, str(i)) for i in range(max(names) + 1)]
        return _build(paths, labels, splits, classes, base, "pets", size or PetsFormat.default_size, progress)

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, original: ImageSet | None = None, **_: object) -> list[Path]:
        root = out_dir / PETS_DIR
        return _mirror(ds, root, original, ["annotations"])


@FORMATS.register("flowers102")
class Flowers102Format:
    """Oxford Flowers102 from a torchvision root."""

    default_size = 224

    @staticmethod
    def detect(path: Path) -> bool:
        b = _base(path, FLOWERS_DIR)
        return b is not None and (b / "setid.mat").is_file() and (b / "imagelabels.mat").is_file()

    @staticmethod
    def read(path: Path, size: int | None = None, progress: bool = False, **_: object) -> ImageSet:
        from scipy.io import loadmat

        base = _base(path, FLOWERS_DIR)
        assert base is not None
        try:
            labels_all = np.asarray(loadmat(base / "imagelabels.mat")["labels"]).ravel().astype(int) - 1
            setid = loadmat(base / "setid.mat")
        except (KeyError, ValueError, OSError) as e:
            raise UserError(f"{base}: cannot read imagelabels.mat/setid.mat ({e})") from None
        paths, labels, splits = [], [], []
        for key, split in (("trnid", "train"), ("valid", "val"), ("tstid", "test")):
            if key not in setid:
                raise UserError(f"{base / 'setid.mat'}: field '{key}' is missing")
            for i in np.asarray(setid[key]).ravel().astype(int):
                if not 1 <= i <= len(labels_all):
                    raise UserError(f"{base / 'setid.mat'}: image id {i} out of range 1..{len(labels_all)}")
                paths.append(_find_image(base / "jpg", f"image_{i:05d}"))
                labels.append(int(labels_all[i - 1]))
                splits.append(split)
        classes = [str(i) for i in range(int(labels_all.max()) + 1)]
        return _build(paths, labels, splits, classes, base, "flowers102", size or Flowers102Format.default_size,
                      progress)

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, original: ImageSet | None = None, **_: object) -> list[Path]:
        root = out_dir / FLOWERS_DIR
        return _mirror(ds, root, original, ["imagelabels.mat", "setid.mat"])
