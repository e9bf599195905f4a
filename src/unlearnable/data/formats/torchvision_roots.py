"""Oxford-IIIT Pet and Flowers102 as laid out by torchvision under a local root (nothing is downloaded).

- Pets: ``<root>/oxford-iiit-pet/images/<name>.jpg`` + ``annotations/{trainval,test}.txt`` (``name class species
  breed``, class 1-based) + ``annotations/trimaps/<name>.png``; trainval -> ``train``.
- Flowers102: ``<root>/flowers-102/jpg/image_00001.jpg`` + ``imagelabels.mat`` + ``setid.mat`` (trnid/valid/tstid).

Outputs mirror the same tree with the same file names (annotations, trimaps and ``.mat`` files copied byte for
byte), so ``torchvision.datasets.OxfordIIITPet(out)`` and ``Flowers102(out)`` read them unchanged. Images keep
their native size unless ``--size`` is given (then Pets trimaps are resized with nearest neighbour to match).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from ..imageset import ImageSet
from . import FORMATS
from .catalog import FileCatalog, save_files

PETS_DIR, FLOWERS_DIR = "oxford-iiit-pet", "flowers-102"


def _base(path: Path, name: str) -> Path | None:
    if (path / name).is_dir():
        return path / name
    if path.name == name and path.is_dir():
        return path
    return None


def _find_image(folder: Path, stem: str) -> Path:
    for suffix in (".jpg", ".png", ".jpeg"):  # torchvision reads <name>.jpg
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    raise UserError(f"{folder / stem}.jpg: image listed in the annotations is missing")


@FORMATS.register("pets")
class PetsFormat:
    """Oxford-IIIT Pet (37 breeds) from a torchvision root."""

    @staticmethod
    def detect(path: Path) -> bool:
        b = _base(path, PETS_DIR)
        return b is not None and ((b / "images").is_dir() or (b / "annotations").is_dir())

    @staticmethod
    def catalog(path: Path, **_: object) -> FileCatalog:
        base = _base(path, PETS_DIR)
        assert base is not None
        ann_dir = base / "annotations"
        if not (ann_dir / "trainval.txt").is_file():
            missing = ann_dir if not ann_dir.is_dir() else ann_dir / "trainval.txt"
            raise UserError(f"{missing}: missing (an Oxford-IIIT Pet root needs annotations/trainval.txt and "
                            f"annotations/test.txt, as torchvision lays it out)")
        if not (base / "images").is_dir():
            raise UserError(f"{base / 'images'}: missing (an Oxford-IIIT Pet root needs images/<name>.jpg)")
        rels, labels, splits, names = [], [], [], {}
        for fname, split in (("trainval.txt", "train"), ("test.txt", "test")):
            ann = ann_dir / fname
            if not ann.is_file():
                continue
            for ln, line in enumerate(ann.read_text().splitlines(), 1):
                if not line.strip() or line.startswith("#"):
                    continue
                parts = line.split()
                if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) < 1:
                    raise UserError(f"{ann}:{ln}: expected '<image> <class id> ...', got '{line.strip()}'")
                stem, cid = parts[0], int(parts[1]) - 1
                names[cid] = " ".join(w.title() for w in stem.rsplit("_", 1)[0].split("_"))  # torchvision's rule
                rels.append(str(_find_image(base / "images", stem).relative_to(base)))
                labels.append(cid)
                splits.append(split)
        if not rels:
            raise UserError(f"{ann_dir / 'trainval.txt'}: lists no images")
        classes = [names.get(i, str(i)) for i in range(max(names) + 1)]
        return FileCatalog("pets", base, rels, labels, splits, classes, extras=["annotations"],
                           masks="annotations/trimaps", prefix=PETS_DIR)

    @staticmethod
    def read(path: Path, size: int | None = None, **_: object) -> ImageSet:
        return PetsFormat.catalog(path).imageset(size=size)

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, original: ImageSet | None = None, **_: object) -> list[Path]:
        return save_files(ds, out_dir / PETS_DIR, original, ["annotations"], "annotations/trimaps")


@FORMATS.register("flowers102")
class Flowers102Format:
    """Oxford Flowers102 from a torchvision root."""

    @staticmethod
    def detect(path: Path) -> bool:
        b = _base(path, FLOWERS_DIR)
        return b is not None and ((b / "jpg").is_dir() or (b / "setid.mat").is_file())

    @staticmethod
    def catalog(path: Path, **_: object) -> FileCatalog:
        from scipy.io import loadmat

        base = _base(path, FLOWERS_DIR)
        assert base is not None
        mats = {}
        for name, field in (("imagelabels.mat", "labels"), ("setid.mat", "trnid")):
            f = base / name
            if not f.is_file():
                raise UserError(f"{f}: missing (a Flowers102 root needs jpg/, imagelabels.mat and setid.mat)")
            try:
                mats[name] = loadmat(f, squeeze_me=True)  # as torchvision reads them
            except (ValueError, OSError, TypeError) as e:
                raise UserError(f"{f}: not a readable .mat file ({str(e).splitlines()[0]})") from None
            if field not in mats[name]:
                raise UserError(f"{f}: field '{field}' is missing")
        lab_file, set_file = base / "imagelabels.mat", base / "setid.mat"
        labels_all = np.atleast_1d(mats["imagelabels.mat"]["labels"]).astype(int) - 1
        on_disk = sorted(p.name for p in (base / "jpg").glob("image_*.jpg")) if (base / "jpg").is_dir() else []
        if len(on_disk) != len(labels_all):
            raise UserError(f"{lab_file}: {len(labels_all)} labels for {len(on_disk)} images in {base / 'jpg'} "
                            f"(the .mat files do not match the images)")
        if len(labels_all) and labels_all.min() < 0:
            raise UserError(f"{lab_file}: label {int(labels_all.min()) + 1} is out of range (labels start at 1)")
        rels, labels, splits, seen = [], [], [], {}
        for key, split in (("trnid", "train"), ("valid", "val"), ("tstid", "test")):
            if key not in mats["setid.mat"]:
                raise UserError(f"{set_file}: field '{key}' is missing")
            for i in np.atleast_1d(mats["setid.mat"][key]).astype(int).tolist():
                if not 1 <= i <= len(labels_all):
                    raise UserError(f"{set_file}: image id {i} out of range 1..{len(labels_all)} (the .mat files "
                                    f"do not match the images)")
                if i in seen:
                    raise UserError(f"{set_file}: image id {i} is listed in both {seen[i]} and {key}")
                seen[i] = key
                rel = f"jpg/image_{i:05d}.jpg"
                if not (base / rel).is_file():
                    raise UserError(f"{set_file}: image id {i} has no file {base / rel} (the .mat files do not "
                                    f"match the images)")
                rels.append(rel)
                labels.append(int(labels_all[i - 1]))
                splits.append(split)
        classes = [str(i) for i in range(int(labels_all.max()) + 1)]
        return FileCatalog("flowers102", base, rels, labels, splits, classes,
                           extras=["imagelabels.mat", "setid.mat"], prefix=FLOWERS_DIR)

    @staticmethod
    def read(path: Path, size: int | None = None, **_: object) -> ImageSet:
        return Flowers102Format.catalog(path).imageset(size=size)

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, original: ImageSet | None = None, **_: object) -> list[Path]:
        return save_files(ds, out_dir / FLOWERS_DIR, original, ["imagelabels.mat", "setid.mat"])
