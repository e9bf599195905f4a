"""Image folders: ``root/<split>/<class>/*.png|jpg`` or ``root/<class>/*`` with a seeded, stable split."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ...errors import UserError
from ..imageset import SPLITS, ImageSet
from . import FORMATS
from .catalog import FileCatalog, save_files
from .images import IMAGE_SUFFIXES, is_image


def _stable_fraction(seed: int, ident: str) -> float:
    """A number in [0, 1) from (seed, id): the split of a file never depends on listing order or other files."""
    h = hashlib.sha256(f"{seed}:{ident}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


NIFTI_HINT = "NIfTI volumes are 3D subjects: pass a .csv of NIfTI paths (see `unlearnable datasets`)"
#: files a class folder may hold instead of images, and what to do with them (``.gz``: ``.nii.gz``)
OTHER_KINDS = {".dcm": "DICOM is not read: export the slices as PNG (16-bit PNG keeps the grey levels) or the "
                       "volumes as NIfTI",
               ".nii": NIFTI_HINT, ".gz": NIFTI_HINT,
               ".npy": "arrays are read from one .npz archive in the MedMNIST layout, not per file"}


def _what_else(folder: Path) -> str:
    """`` (found 3 .dcm files: ...)`` for a class folder without images, naming the most common other suffix and,
    where known, what to do with it; ``""`` for an empty folder."""
    suffixes = [f.suffix.lower() or "(none)" for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    if not suffixes:
        return ""
    top = max(set(suffixes), key=suffixes.count)
    n = suffixes.count(top)
    hint = OTHER_KINDS.get(top, f"images are read from {', '.join(IMAGE_SUFFIXES)}")
    return f" (found {n} {top} file{'s' if n != 1 else ''}: {hint})"


@FORMATS.register("folder")
class FolderFormat:
    """A tree of images, one sub-folder per class (optionally under train/val/test)."""

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_dir()

    @staticmethod
    def catalog(path: Path, seed: int = 0, test_fraction: float = 0.2, **_: object) -> FileCatalog:
        subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        split_layout = bool(subdirs) and all(d.name in SPLITS for d in subdirs)
        entries: list[tuple[str, str, Path]] = []  # (split, class, file)
        if split_layout:
            for sd in subdirs:
                for cd in sorted(d for d in sd.iterdir() if d.is_dir()):
                    entries += [(sd.name, cd.name, f) for f in sorted(cd.iterdir()) if is_image(f)]
            classes = sorted({c for _, c, _ in entries})
            if "train" not in {s for s, _, _ in entries}:
                raise UserError(f"{path}: split layout has no 'train/<class>/' images")
        else:
            if not subdirs:
                raise UserError(f"{path}: no class sub-folders (expected {path}/<class>/*.png or "
                                f"{path}/train/<class>/*.png)")
            for cd in subdirs:
                files = [f for f in sorted(cd.iterdir()) if is_image(f)]
                if not files:
                    raise UserError(f"{cd}: class folder has no images{_what_else(cd)}")
                for f in files:
                    ident = f"{cd.name}/{f.stem}"
                    s = "test" if _stable_fraction(seed, ident) < test_fraction else "train"
                    entries.append((s, cd.name, f))
            classes = [d.name for d in subdirs]
        if not entries:
            raise UserError(f"{path}: no images found ({', '.join(s for s in ('.png', '.jpg'))} ...)")
        cls_index = {c: i for i, c in enumerate(classes)}
        meta = {"layout": "split" if split_layout else "class", "seed": seed, "test_fraction": test_fraction}
        return FileCatalog("folder", path, [str(f.relative_to(path)) for _, _, f in entries],
                           [cls_index[c] for _, c, _ in entries], [s for s, _, _ in entries], classes, meta=meta)

    @staticmethod
    def read(path: Path, size: int | None = None, seed: int = 0, test_fraction: float = 0.2,
             **_: object) -> ImageSet:
        return FolderFormat.catalog(path, seed, test_fraction).imageset(size=size)

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, original: ImageSet | None = None, **_: object) -> list[Path]:
        """Mirror the source tree; unchanged files are copied byte for byte."""
        return save_files(ds, out_dir, original)
