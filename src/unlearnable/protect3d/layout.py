"""Where each subject's files come from and go to: the output keeps the input's layout and file names.

MRBrainS18 folder: ``<id>/pre/<modality file>`` and ``<id>/segm.nii.gz``, as read (other files, such as the
unregistered ``orig/`` scans, are not copied: they would be unprotected copies of the same images). CSV: the
same paths relative to the CSV, and the CSV itself copied byte for byte. brain-phantoms (no files): the
MRBrainS18 layout with the published names. Held-out subjects and every label map are copied byte for byte.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.formats.mrbrains import LABEL_FILE, MRBRAINS_FILES, subject_headers
from ..data.formats.nifti import VolumeHeader, read_volume, write_volume
from ..data.subjectset import SubjectSet
from ..errors import UserError
from ..utils import sha256_file
from .budget import apply_delta, window_of
from .quality import volume_quality


@dataclass(frozen=True)
class SubjectFiles:
    """One subject's files: ``{modality: (source path or None, output path relative to OUT)}`` and its label map."""

    sid: str
    images: dict[str, tuple[Path | None, str]]
    label: tuple[Path | None, str]


def plan(source: str, s: SubjectSet) -> tuple[list[SubjectFiles], list[tuple[Path, str]]]:
    """The files of every subject of ``s`` (read from ``source``) and extra files to copy (the CSV)."""
    fmt = s.meta.get("format")
    heads = s.meta.get("headers")
    if fmt not in ("mrbrains", "csv") or not heads:  # built-in subjects: the MRBrainS18 layout
        def name(m: str) -> str:
            return MRBRAINS_FILES[m][0] if m in MRBRAINS_FILES else f"{m}.nii.gz"

        return [SubjectFiles(sid, {m: (None, f"{sid}/pre/{name(m)}") for m in s.modalities},
                             (None, f"{sid}/{LABEL_FILE}")) for sid in s.ids], []
    src = Path(source)
    base = (src if fmt == "mrbrains" else src.parent).resolve()
    out = []
    for sid, h in zip(s.ids, heads, strict=True):
        def rel(v: VolumeHeader, sid: str = sid) -> tuple[Path, str]:
            p = Path(v.path).resolve()
            if not p.is_relative_to(base):
                raise UserError(f"{source}: subject {sid}: {v.path} lies outside {base}; the output repeats the "
                                "input's relative layout, so keep every file below the CSV's folder")
            return Path(v.path), str(p.relative_to(base))

        out.append(SubjectFiles(sid, {m: rel(h[m]) for m in s.modalities}, rel(h["label"])))
    return out, ([(src, src.name)] if fmt == "csv" else [])


def _clean(f: SubjectFiles, s: SubjectSet, i: int) -> list[tuple[np.ndarray, VolumeHeader]]:
    """The clean volumes of subject ``i`` as stored (scaled values, header), one per modality."""
    if all(p is not None for p, _ in f.images.values()):
        return [read_volume(p) for p, _ in f.images.values()]  # type: ignore[arg-type]
    heads = subject_headers(s, i)
    image = s.native(i)[0]
    return [(image[c].numpy(), heads[m]) for c, m in enumerate(s.modalities)]


def write_subject(f: SubjectFiles, s: SubjectSet, i: int, delta: torch.Tensor | None, eps: float, tmp: Path,
                  ) -> dict[str, Any]:
    """Write subject ``i`` under ``tmp``: protected with ``delta`` ``(C, D, H, W)`` (model units), or copied as is
    when ``delta`` is None. Returns its manifest record (files and digests; budget and PSNR/SSIM if protected)."""
    rec: dict[str, Any] = {"id": f.sid, "split": s.splits[i], "protected": delta is not None}
    lp, lrel = f.label
    dst = tmp / lrel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if lp is not None:
        shutil.copyfile(lp, dst)  # label maps are never touched
    else:
        write_volume(dst, s.native(i)[1].numpy(), subject_headers(s, i)["label"])
    written = [lrel]
    clean = _clean(f, s, i)
    if delta is None:
        for (p, rel), (vals, head) in zip(f.images.values(), clean, strict=True):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, tmp / rel) if p is not None else write_volume(tmp / rel, vals, head)
            written.append(rel)
    else:
        as_u8 = all(v.dtype == np.uint8 for v, _ in clean)
        budget, prot, windows = {}, [], []
        for c, ((_, rel), (vals, head)) in enumerate(zip(f.images.values(), clean, strict=True)):
            done = apply_delta(vals, delta[c].numpy(), eps, window_of(vals, as_u8), head.dtype, head.slope, head.inter)
            write_volume(tmp / rel, done.values, head)
            budget[s.modalities[c]] = done.record()
            prot.append(done.values)
            windows.append(done.window)
            written.append(rel)
        rec |= volume_quality([v for v, _ in clean], prot, windows)
        rec["budget"] = budget
    rec["sha256"] = {r: sha256_file(tmp / r) for r in written}
    return rec
