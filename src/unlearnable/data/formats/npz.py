"""MedMNIST-style ``.npz``: ``{train,val,test}_{images,labels}``, images ``(N, H, W)`` or ``(N, H, W, 3)``.

Writing keeps every key, dtype, shape and the archive's compression, so a protected file drops into any
MedMNIST pipeline in place of the original.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ..imageset import SPLITS, ImageSet
from . import FORMATS


def _open(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise UserError(f"{path}: not a readable .npz archive ({str(e).splitlines()[0]})") from None


@FORMATS.register("npz")
class NpzFormat:
    """MedMNIST ``.npz`` archives."""

    suffixes = (".npz",)

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".npz"

    @staticmethod
    def read(path: Path, **_: object) -> ImageSet:
        arrays = _open(path)
        present = [s for s in SPLITS if f"{s}_images" in arrays]
        if not present:
            raise UserError(f"{path}: no '<split>_images' arrays (expected keys like train_images, train_labels)")
        images, labels, splits, ids = [], [], [], []
        layout = None
        for s in present:
            im_key, lab_key = f"{s}_images", f"{s}_labels"
            if lab_key not in arrays:
                raise UserError(f"{path}: '{im_key}' has no matching '{lab_key}'")
            im, lab = arrays[im_key], arrays[lab_key]
            if im.dtype != np.uint8:
                raise UserError(f"{path}: '{im_key}' has dtype {im.dtype}, expected uint8")
            if im.ndim == 3:
                this = "NHW"
            elif im.ndim == 4 and im.shape[-1] in (1, 3):
                this = "NHWC"
            else:
                raise UserError(f"{path}: '{im_key}' has shape {im.shape}, expected (N, H, W) or (N, H, W, 3)")
            if layout is not None and this != layout:
                raise UserError(f"{path}: '{im_key}' layout {this} differs from the other splits ({layout})")
            layout = this
            lab2 = lab[:, 0] if lab.ndim == 2 and lab.shape[1] >= 1 else lab
            if lab.ndim == 2 and lab.shape[1] > 1:
                raise UserError(f"{path}: '{lab_key}' has shape {lab.shape}; multi-label tasks are not supported")
            if lab2.shape[0] != im.shape[0]:
                raise UserError(f"{path}: '{lab_key}' has {lab2.shape[0]} labels for {im.shape[0]} images "
                                f"in '{im_key}' (counts must match)")
            if im.shape[0] == 0:
                raise UserError(f"{path}: '{im_key}' is empty")
            if (lab2 < 0).any():
                raise UserError(f"{path}: '{lab_key}' has negative label {int(lab2.min())}")
            images.append(im if this == "NHWC" else im[..., None])
            labels.append(lab2.astype(np.int64))
            splits += [s] * len(lab2)
            ids += [f"{s}/{i:06d}" for i in range(len(lab2))]
        shapes = {a.shape[1:] for a in images}
        if len(shapes) != 1:
            raise UserError(f"{path}: splits have different image shapes {sorted(shapes)}")
        all_labels = np.concatenate(labels)
        n_cls = int(all_labels.max()) + 1
        arr = np.concatenate(images).transpose(0, 3, 1, 2)
        with zipfile.ZipFile(path) as zf:
            compressed = any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist())
        meta = {"format": "npz", "source": str(path), "arrays": {k: (v.dtype.str, list(v.shape))
                                                                 for k, v in arrays.items()},
                "compressed": compressed}
        return ImageSet(torch.from_numpy(np.ascontiguousarray(arr)), torch.from_numpy(all_labels), tuple(ids),
                        tuple(splits), tuple(str(i) for i in range(n_cls)), layout or "NHW", meta)

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, source: Path | None = None, **_: object) -> list[Path]:
        """Write ``out_dir/<source name>.npz`` with the source's keys, dtypes and compression."""
        name = (source.name if source is not None else f"{ds.meta.get('name', 'images')}.npz")
        arrays: dict[str, np.ndarray] = {}
        original = NpzFormat._source_arrays(source)
        img = ds.to_numpy()
        for s in ds.split_names():
            idx = ds.indices(s).numpy()
            lab = ds.labels[idx].numpy()
            ref = original.get(f"{s}_labels")
            if ref is not None:
                lab = lab.astype(ref.dtype).reshape(ref.shape)
            else:
                lab = lab.astype(np.uint8 if ds.num_classes <= 256 else np.int64)[:, None]
            arrays[f"{s}_images"] = img[idx]
            arrays[f"{s}_labels"] = lab
        for k, v in original.items():  # keep any extra arrays the source carried, untouched
            arrays.setdefault(k, v)
        if original:  # same key order as the source
            arrays = {k: arrays[k] for k in original} | {k: v for k, v in arrays.items() if k not in original}
        out = out_dir / name
        saver = np.savez_compressed if ds.meta.get("compressed", True) else np.savez
        with open(out, "wb") as f:
            saver(f, **arrays)
        return [out]

    @staticmethod
    def _source_arrays(source: Path | None) -> dict[str, np.ndarray]:
        if source is None or not Path(source).is_file():
            return {}
        return _open(Path(source))

