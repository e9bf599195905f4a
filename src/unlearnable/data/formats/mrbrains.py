"""Subjects on disk: the MRBrainS18 folder layout as published, and a CSV of NIfTI paths.

MRBrainS18 training layout (the challenge's release; ids such as ``1``, ``4``, ``070``, ``148`` are kept as strings)::

    <root>/<id>/pre/reg_T1.nii.gz  <root>/<id>/pre/reg_IR.nii.gz  <root>/<id>/pre/FLAIR.nii.gz  <root>/<id>/segm.nii.gz

``<id>/orig/`` (the unregistered scans) is ignored; ``pre/T1.nii.gz`` and ``pre/T1_IR.nii.gz`` (older names) are
read as aliases. CSV layout: a header ``id,label,<modality>...[,split]``; each cell a NIfTI path relative to the CSV.

Class names and scored labels come from :data:`~unlearnable.data.subjects.LABEL_SCHEMES`, the same for both routes:
a label map that names a scheme in its NIfTI intent uses it; otherwise a label file called ``segm.nii.gz`` is
MRBrainS18 (scored 1-8) and any other is numbered (every label >= 1 scored). Raw intensities are normalised per
channel to uint8 (:func:`normalise_intensity`); a volume stored as unscaled uint8 is taken as normalised, so
read ∘ write is the identity.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UserError
from ...registry import look_up_option
from ..subjectset import LABEL_SCHEMES, SubjectSet, canonical_modality, normalise_intensity, numbered_scheme, resample
from . import FORMATS
from .nifti import VolumeHeader, new_header, read_volume, same_grid, write_volume

MRBRAINS_FILES = {"T1": ("reg_T1.nii.gz", "T1.nii.gz"), "IR": ("reg_IR.nii.gz", "T1_IR.nii.gz"),
                  "FLAIR": ("FLAIR.nii.gz",)}
MRBRAINS_MODALITIES = tuple(MRBRAINS_FILES)
LABEL_FILE = "segm.nii.gz"


def id_order(sid: str) -> tuple:
    """Natural order of ids: ``1 < 4 < 14 < 070 < 148 < a``; the id itself is never changed."""
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", sid) if p)


def modality_file(pre: Path, modality: str) -> Path | None:
    """The file of ``modality`` in a subject's ``pre/`` folder (published name first, then aliases)."""
    for name in MRBRAINS_FILES.get(modality, (f"{modality}.nii.gz",)):
        for cand in (pre / name, pre / name.removesuffix(".gz")):
            if cand.is_file():
                return cand
    return None


def read_subject(sid: str, paths: dict[str, Path], label_path: Path, shape: Sequence[int] | None,
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, VolumeHeader]]:
    """One subject: ``(C, D, H, W)`` uint8, ``(D, H, W)`` int64 labels, headers by modality and ``"label"``."""
    chans, heads = [], {}
    for mod, p in paths.items():
        data, h = read_volume(p)
        if chans and data.shape != chans[0].shape:
            raise UserError(f"{p}: shape {data.shape} differs from the subject's other images {chans[0].shape}")
        chans.append(data)
        heads[mod] = h
    lab, lh = read_volume(label_path)
    first = heads[next(iter(paths))]
    if lab.shape != chans[0].shape:
        raise UserError(f"{label_path}: label map shape {lab.shape} differs from the image shape {chans[0].shape}")
    off = same_grid(lh, first)
    if off:
        raise UserError(f"{label_path}: affine differs from {first.path}'s by up to {off:.3g} mm; the label map "
                        "must lie on the image grid")
    if not np.all(np.mod(lab, 1) == 0) or lab.min() < 0:
        raise UserError(f"{label_path}: label map is not made of non-negative integers")
    heads["label"] = lh
    raw = np.stack(chans).astype(np.float32)
    stored_u8 = all(c.dtype == np.uint8 for c in chans)
    labels = torch.from_numpy(lab.astype(np.int64))
    if shape is not None and tuple(shape) != tuple(lab.shape):
        # resample first, normalise after, so interpolation does not smear the clipped range
        affine = first.affine.copy()
        affine[:3, :3] = affine[:3, :3] * (np.array(lab.shape) / np.array(shape))[None, :]
        heads = {k: h.with_affine(affine) for k, h in heads.items()}
        raw = resample(torch.from_numpy(raw), shape).numpy()
        labels = resample(labels, shape, labels=True)
    img = torch.from_numpy(raw).round().clamp(0, 255).to(torch.uint8) if stored_u8 else normalise_intensity(raw)
    return img, labels, heads


def resolve_scheme(heads: list[dict[str, VolumeHeader]], labels: list[torch.Tensor],
                   ) -> tuple[str, tuple[str, ...], tuple[int, ...]]:
    """The label scheme of a set of subjects (one for all), checked against their label values."""
    names = []
    for h in heads:
        lh = h["label"]
        name = lh.scheme if lh.scheme in (*LABEL_SCHEMES, "numbered") else None
        names.append(name or ("mrbrains18" if Path(lh.path).name == LABEL_FILE else "numbered"))
        if names[-1] != names[0]:
            raise UserError(f"{lh.path}: labels follow scheme '{names[-1]}', {heads[0]['label'].path} '{names[0]}'")
    top = max(int(t.max()) for t in labels)
    if names[0] == "numbered":
        return "numbered", *numbered_scheme(top + 1)
    classes, scored = LABEL_SCHEMES[names[0]]
    for h, t in zip(heads, labels, strict=True):
        if int(t.max()) >= len(classes):
            raise UserError(f"{h['label'].path}: label {int(t.max())} is outside the {names[0]} labels "
                            f"0..{len(classes) - 1}")
    return names[0], classes, scored


def _stack(sids: list[str], vols: list, mods: Sequence[str], splits: Sequence[str], source: str,
           pad: bool = False) -> SubjectSet:
    """One :class:`SubjectSet` of every subject. Subjects of different shapes are refused unless ``pad``: then each
    is zero-padded (image 0, label 0 = background) at the high end of every axis to the largest extent, and
    ``meta["native_shapes"]`` keeps each subject's own shape (``protect`` and ``audit-seg``, which must keep every
    voxel where it is, crop back to it)."""
    shapes = [tuple(int(n) for n in v[0].shape[1:]) for v in vols]
    extra: dict = {}
    if len(set(shapes)) > 1:
        if not pad:
            raise UserError(f"subjects have different shapes {sorted(set(shapes))}; pass --shape D,H,W to resample "
                            "them")
        top = [max(sh[a] for sh in shapes) for a in range(3)]
        vols = [(F.pad(img, _pad_to(sh, top)), F.pad(lab, _pad_to(sh, top)), h)
                for (img, lab, h), sh in zip(vols, shapes, strict=True)]
        extra["native_shapes"] = [list(sh) for sh in shapes]
    heads = [v[2] for v in vols]
    scheme, classes, scored = resolve_scheme(heads, [v[1] for v in vols])
    return SubjectSet(torch.stack([v[0] for v in vols]), torch.stack([v[1] for v in vols]), tuple(sids),
                      classes, scored, tuple(mods), tuple(splits),
                      meta={"format": source, "labels": scheme, "headers": heads,
                            "affines": [h["label"].affine for h in heads]} | extra)


def _pad_to(shape: Sequence[int], top: Sequence[int]) -> tuple[int, ...]:
    """``F.pad`` widths (last axis first) that grow ``shape`` (D, H, W) to ``top`` at the high end."""
    return tuple(x for a in (2, 1, 0) for x in (0, top[a] - shape[a]))


def subject_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    dirs = sorted((d for d in root.iterdir() if (d / "pre").is_dir()), key=lambda d: id_order(d.name))
    if not dirs:
        hint = f"; did you mean {root / 'training'}?" if (root / "training").is_dir() else ""
        raise UserError(f"{root}: no subjects found (expected <root>/<id>/pre/reg_T1.nii.gz, reg_IR.nii.gz, "
                        f"FLAIR.nii.gz and <root>/<id>/segm.nii.gz){hint}")
    return dirs


def read_mrbrains(root: str | Path, modalities: Sequence[str] | None = None,
                  shape: Sequence[int] | None = None, pad: bool = False) -> SubjectSet:
    """Read every ``<root>/<id>/`` with a ``pre/`` folder. ``modalities`` (any of T1, IR, FLAIR, in the order given)
    picks channels; None takes every modality that any subject has, and then every subject must have them all."""
    dirs = subject_dirs(Path(root))
    if modalities is None:
        mods = [m for m in MRBRAINS_MODALITIES if any(modality_file(d / "pre", m) for d in dirs)]
        if not mods:
            raise UserError(f"{dirs[0] / 'pre'}: no T1, IR or FLAIR image (expected reg_T1.nii.gz, reg_IR.nii.gz, "
                            "FLAIR.nii.gz)")
        how = "other subjects have it; pick channels with --modalities"
    else:
        mods = [look_up_option(canonical_modality(m), MRBRAINS_MODALITIES, "MRBrainS18 modality") for m in modalities]
        how = f"named in --modalities {','.join(mods)}"
    vols = []
    for d in dirs:
        paths = {m: modality_file(d / "pre", m) for m in mods}
        missing = [m for m, p in paths.items() if p is None]
        if missing:
            m = missing[0]
            raise UserError(f"{d / 'pre' / MRBRAINS_FILES[m][0]}: missing (subject {d.name} has no {m} image, {how})")
        vols.append(read_subject(d.name, paths, d / LABEL_FILE, shape))  # type: ignore[arg-type]
    return _stack([d.name for d in dirs], vols, mods, (), "mrbrains", pad)


def read_csv(path: str | Path, shape: Sequence[int] | None = None,
             modalities: Sequence[str] | None = None, pad: bool = False) -> SubjectSet:
    """Read a CSV ``id,label,<modality>...[,split]`` of NIfTI paths; ``modalities`` picks columns (order kept)."""
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
    if modalities is not None:
        mods = [look_up_option(m, mods, f"modality column of {path.name}") for m in modalities]
    vols, sids, splits = [], [], []
    for r in rows:
        sid = r["id"].strip()
        empty = [m for m in mods if not (r.get(m) or "").strip()]
        if empty:
            raise UserError(f"{path}: subject {sid}: missing modality {', '.join(empty)}")
        paths = {m: path.parent / r[m].strip() for m in mods}
        vols.append(read_subject(sid, paths, path.parent / r["label"].strip(), shape))
        sids.append(sid)
        splits.append((r.get("split") or "train").strip())
    return _stack(sids, vols, mods, splits, "csv", pad)


def subject_headers(s: SubjectSet, i: int) -> dict[str, VolumeHeader]:
    """Headers to write subject ``i`` with: as read, or fresh ones (built-in subjects) from its affine."""
    heads = s.meta.get("headers")
    if heads:
        return heads[i]
    aff = np.asarray(s.meta["affines"][i]) if s.meta.get("affines") else np.eye(4)
    desc = str(s.meta.get("descrip", "unlearnable"))
    out = {m: new_header(aff, np.uint8, desc) for m in s.modalities}
    out["label"] = new_header(aff, np.uint8, desc, scheme=s.meta.get("labels", "numbered"))
    return out


def write_mrbrains(s: SubjectSet, root: str | Path) -> Path:
    """Write ``s`` in the MRBrainS18 layout (published file names). Intensities are written as the uint8 the tools
    use (a uint8 source keeps its header exactly); label maps keep their header and type, and name their scheme."""
    root = Path(root)
    for i, sid in enumerate(s.ids):
        heads = subject_headers(s, i)
        for c, mod in enumerate(s.modalities):
            name = MRBRAINS_FILES[mod][0] if mod in MRBRAINS_FILES else f"{mod}.nii.gz"
            write_volume(root / sid / "pre" / name, s.images[i, c].numpy(), heads[mod], np.uint8)
        lh, scheme = heads["label"], str(s.meta.get("labels", "numbered"))
        lh = lh if lh.scheme == scheme else lh.as_label_map(scheme)
        write_volume(root / sid / LABEL_FILE, s.labels[i].numpy(), lh)
    return root


def write_csv(s: SubjectSet, path: str | Path) -> Path:
    """Write the MRBrainS18 layout beside ``path`` and the CSV that lists it."""
    path = Path(path)
    write_mrbrains(s, path.parent)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", *s.modalities, "split"])
        for sid, split in zip(s.ids, s.splits, strict=True):
            files = (MRBRAINS_FILES[m][0] if m in MRBRAINS_FILES else f"{m}.nii.gz" for m in s.modalities)
            w.writerow([sid, f"{sid}/{LABEL_FILE}", *(f"{sid}/pre/{n}" for n in files), split])
    return path


# -- registered as formats: the 3D sources (``dims = 3``) beside the 2D image formats --------------------------
@FORMATS.register("mrbrains")
class MRBrainSFormat:
    """MRBrainS18-layout folder of NIfTI volumes: <root>/<id>/pre/{reg_T1,reg_IR,FLAIR}.nii.gz + <id>/segm.nii.gz
    (3D subjects: segment train, forget, protect SUBJECTS)."""

    dims = 3

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_dir()

    @staticmethod
    def read_subjects(path: Path, shape: Sequence[int] | None = None,
                      modalities: Sequence[str] | None = None, pad: bool = False) -> SubjectSet:
        return read_mrbrains(path, modalities, shape, pad)

    @staticmethod
    def write_subjects(s: SubjectSet, out: Path) -> Path:
        return write_mrbrains(s, out)


@FORMATS.register("nifti-csv")
class NiftiCsvFormat:
    """CSV of NIfTI paths, header id,label,<modality>...[,split], paths relative to the CSV (3D subjects)."""

    dims = 3

    @staticmethod
    def detect(path: Path) -> bool:
        return path.suffix.lower() == ".csv"

    @staticmethod
    def read_subjects(path: Path, shape: Sequence[int] | None = None,
                      modalities: Sequence[str] | None = None, pad: bool = False) -> SubjectSet:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        return read_csv(path, shape, modalities, pad)

    @staticmethod
    def write_subjects(s: SubjectSet, out: Path) -> Path:
        return write_csv(s, out)
