"""Reading and writing individual image files, shared by the folder-like formats."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ...errors import UserError
from ..imageset import ImageSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LOSSLESS = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")


def is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def read_images(paths: Sequence[Path], size: int | None, progress: bool = False) -> tuple[torch.Tensor, bool]:
    """Decode ``paths`` into uint8 ``(N, C, H, W)``; returns (images, resized).

    All grey (mode L/I;16/1) -> C=1, otherwise RGB. Differing sizes need ``size`` (images are then resized to
    ``size x size``, as the Pets/Flowers102 studies do); a corrupt file is named in the error.
    """
    pil: list[Image.Image] = []
    from ...log import track

    # Small folders read in a blink: progress only for large ones (a log gets a line per 10%).
    for p in track(paths, len(paths), "reading images", "image", enabled=progress and len(paths) >= 1000):
        try:
            with Image.open(p) as im:
                im.load()
                pil.append(im.copy())
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise UserError(f"{p}: not a readable image ({type(e).__name__})") from None
    grey = all(im.mode in ("L", "1", "I;16", "I") for im in pil)
    mode = "L" if grey else "RGB"
    sizes = {im.size for im in pil}
    resized = False
    if size is None and len(sizes) > 1:
        (w0, h0), (w1, h1) = sorted(sizes)[:2]
        raise UserError(f"images have different sizes ({w0}x{h0}, {w1}x{h1}, ...); pass --size N to resize to NxN")
    arrs = []
    for im in pil:
        im = im.convert(mode)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
            resized = True
        a = np.asarray(im, dtype=np.uint8)
        arrs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrs)) if arrs else torch.zeros(0, 1, 1, 1, dtype=torch.uint8), resized


def write_image(arr_chw: np.ndarray, path: Path) -> None:
    img = arr_chw[0] if arr_chw.shape[0] == 1 else arr_chw.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG")


def write_files(ds: ImageSet, original: ImageSet | None, src_paths: Sequence[Path], out_paths: Sequence[Path],
                force_rewrite: bool = False) -> list[Path]:
    """Write each sample to its mirrored path.

    A sample whose pixels are unchanged from the source (and not resized) is copied byte for byte. A changed
    sample is written as PNG: a lossy format would erase most of a perturbation, so ``x.jpg`` becomes ``x.png``
    (with one warning).
    """
    written: list[Path] = []
    lossy_rewritten = 0
    arr = ds.images.numpy()
    for i, (src, dst) in enumerate(zip(src_paths, out_paths)):
        unchanged = (not force_rewrite and original is not None
                     and torch.equal(ds.images[i], original.images[i]))
        dst.parent.mkdir(parents=True, exist_ok=True)
        if unchanged:
            shutil.copyfile(src, dst)
        else:
            if src.suffix.lower() not in LOSSLESS or dst.suffix.lower() != ".png":
                lossy_rewritten += src.suffix.lower() not in LOSSLESS
                dst = dst.with_suffix(".png")
            write_image(arr[i], dst)
        written.append(dst)
    if lossy_rewritten:
        warnings.warn(f"{lossy_rewritten} lossy source image(s) were written as PNG (JPEG would erase the "
                      f"perturbation); file names keep their stem with a .png suffix", stacklevel=2)
    return written
