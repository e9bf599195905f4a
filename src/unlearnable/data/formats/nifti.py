"""NIfTI subjects: the MRBrainS18 folder layout and a CSV of paths, readers and writers.

MRBrainS18 layout::

    <root>/<id>/pre/T1.nii.gz  <root>/<id>/pre/T1_IR.nii.gz  <root>/<id>/pre/FLAIR.nii.gz  <root>/<id>/segm.nii.gz

CSV layout: a header ``id,label,<modality>...[,split]``; each cell a NIfTI path (relative to the CSV's folder).

Raw intensities are normalised per channel to uint8 (robust min-max, :func:`normalise_intensity`); a volume that is
already uint8 on disk is taken as normalised (this is what the writers produce, so read ∘ write is the identity).
Arrays keep the file's voxel axes, called ``(D, H, W)`` here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from ...errors import UserError
from ..subjects import MRBRAINS_CLASSES, MRBRAINS_SCORED, SubjectSet, normalise_intensity, resample

MRBRAINS_MODALITIES = ("T1", "T1_IR", "FLAIR")


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise UserError(f"{path}: missing file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for a broken file
        raise UserError(f"{path}: not a readable NIfTI file ({type(e).__name__})") from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise UserError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, img.affine


def _subject(sid: str, paths: dict[str, Path], label_path: Path, shape: Sequence[int] | None,
             ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Read one subject: ``(C, D, H, W)`` uint8, ``(D, H, W)`` int64 labels, affine (4, 4)."""
    chans, affine, ref = [], None, None
    for mod, p in paths.items():
        data, aff = _load(p)
        if ref is not None and data.shape != ref:
            raise UserError(f"subject {sid}: modality {mod} has shape {data.shape}, others {ref}")
        ref, affine = data.shape, aff if affine is None else affine
        chans.append(data)
    lab, _ = _load(label_path)
    if lab.shape != ref:
        raise UserError(f"subject {sid}: label map shape {lab.shape} differs from the image shape {ref}")
    if not np.all(np.mod(lab, 1) == 0):
        raise UserError(f"subject {sid}: label map is not integer-valued")
    raw = np.stack(chans).astype(np.float32)
    img = torch.from_numpy(raw).round().to(torch.uint8) if all(c.dtype == np.uint8 for c in chans) else None
    labels = torch.from_numpy(lab.astype(np.int64))
    if shape is not None and tuple(shape) != tuple(ref):
        # resample first, normalise after, so interpolation does not smear the clipped range
        affine = affine.copy()
        affine[:3, :3] = affine[:3, :3] * (np.array(ref) / np.array(shape))[None, :]
        raw = resample(torch.from_numpy(raw), shape).numpy()
        labels = resample(labels, shape, labels=True)
        img = torch.from_numpy(raw).round().clamp(0, 255).to(torch.uint8) if img is not None else None
    if img is None:
        img = normalise_intensity(raw)
    return img, labels, affine


def _stack(sids: list[str], vols: list, classes: Sequence[str], scored: Sequence[int], mods: Sequence[str],
           splits: Sequence[str], source: str) -> SubjectSet:
    shapes = {tuple(v[0].shape[1:]) for v in vols}
    if len(shapes) > 1:
        raise UserError(f"subjects have different shapes {sorted(shapes)}; pass --shape D,H,W to resample them")
    labels = torch.stack([v[1] for v in vols])
    n_cls = max(len(classes), int(labels.max()) + 1)
    if n_cls > len(classes):
        classes = tuple(classes) + tuple(str(i) for i in range(len(classes), n_cls))
    return SubjectSet(torch.stack([v[0] for v in vols]), labels, tuple(sids), tuple(classes), tuple(scored),
                      tuple(mods), tuple(splits), meta={"format": source, "affines": [v[2] for v in vols]})


def read_mrbrains(root: str | Path, modalities: Sequence[str] = MRBRAINS_MODALITIES,
                  shape: Sequence[int] | None = None) -> SubjectSet:
    """Read every ``<root>/<id>/`` that holds a ``pre/`` folder; labels 9 and 10 are kept but not scored."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    dirs = sorted(d for d in root.iterdir() if (d / "pre").is_dir())
    if not dirs:
        raise UserError(f"{root}: no subjects found (expected <root>/<id>/pre/{{T1,T1_IR,FLAIR}}.nii.gz)")
    vols = []
    for d in dirs:
        paths = {m: d / "pre" / f"{m}.nii.gz" for m in modalities}
        missing = [m for m, p in paths.items() if not p.exists()]
        if missing:
            raise UserError(f"subject {d.name}: missing modality {', '.join(missing)} ({d / 'pre'})")
        vols.append(_subject(d.name, paths, d / "segm.nii.gz", shape))
    n_cls = max(len(MRBRAINS_CLASSES), max(int(v[1].max()) for v in vols) + 1)
    scored = [c for c in MRBRAINS_SCORED if c < n_cls]
    return _stack([d.name for d in dirs], vols, MRBRAINS_CLASSES, scored, modalities, (), "mrbrains")


def read_csv(path: str | Path, shape: Sequence[int] | None = None) -> SubjectSet:
    """Read a CSV ``id,label,<modality>...[,split]`` of NIfTI paths; labels 1.. are scored."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise UserError(f"{path}: no rows")
    cols = list(rows[0])
    for need in ("id", "label"):
        if need not in cols:
            raise UserError(f"{path}: missing column '{need}' (header: {','.join(cols)})")
    mods = [c for c in cols if c not in ("id", "label", "split")]
    if not mods:
        raise UserError(f"{path}: no modality columns (header: {','.join(cols)})")
    vols, sids, splits = [], [], []
    for r in rows:
        sid = r["id"].strip()
        empty = [m for m in mods if not (r.get(m) or "").strip()]
        if empty:
            raise UserError(f"subject {sid}: missing modality {', '.join(empty)} in {path.name}")
        paths = {m: path.parent / r[m].strip() for m in mods}
        vols.append(_subject(sid, paths, path.parent / r["label"].strip(), shape))
        sids.append(sid)
        splits.append((r.get("split") or "train").strip())
    n_cls = max(int(v[1].max()) for v in vols) + 1
    return _stack(sids, vols, [str(i) for i in range(n_cls)], range(1, n_cls), mods, splits, "csv")


def _affine(s: SubjectSet, i: int) -> np.ndarray:
    aff = s.meta.get("affines")
    return np.asarray(aff[i]) if aff else np.eye(4)


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))


def write_mrbrains(s: SubjectSet, root: str | Path) -> Path:
    """Write ``s`` in the MRBrainS18 layout (uint8 intensities, uint8 labels); returns ``root``."""
    root = Path(root)
    for i, sid in enumerate(s.ids):
        for c, mod in enumerate(s.modalities):
            _save(s.images[i, c].numpy(), _affine(s, i), root / sid / "pre" / f"{mod}.nii.gz")
        _save(s.labels[i].numpy().astype(np.uint8), _affine(s, i), root / sid / "segm.nii.gz")
    return root


def write_csv(s: SubjectSet, path: str | Path) -> Path:
    """Write NIfTIs beside ``path`` (``<dir>/<id>/<modality>.nii.gz``) and the CSV that lists them."""
    path = Path(path)
    write_mrbrains(s, path.parent)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", *s.modalities, "split"])
        for sid, split in zip(s.ids, s.splits, strict=True):
            w.writerow([sid, f"{sid}/segm.nii.gz", *(f"{sid}/pre/{m}.nii.gz" for m in s.modalities), split])
    return path
