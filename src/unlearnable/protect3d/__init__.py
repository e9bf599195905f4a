"""Protecting 3D segmentation subjects (MRBrainS18 folders, NIfTI CSVs, brain-phantoms); see docs/methods.md.

Methods register in :data:`VOLUME_METHODS` when imported below; ``unlearnable protect SUBJECTS`` routes subject
sources here (:func:`is_subject_source`), and ``audit-seg`` (:mod:`.audit`) measures what the protection does.
"""

from __future__ import annotations

from pathlib import Path

from . import noise3d, seg_em, slice_freq  # noqa: F401  (registration)
from .base import VOLUME_METHODS, VolumeProtection  # noqa: F401


def is_subject_source(source: str) -> bool:
    """True for ``brain-phantoms[:...]``, a ``.csv`` of NIfTI paths, or a folder whose subjects have ``pre/``."""
    if source.split(":", 1)[0] == "brain-phantoms":
        return True
    p = Path(source)
    if p.suffix.lower() == ".csv":
        return True
    return p.is_dir() and any((d / "pre").is_dir() for d in p.iterdir() if d.is_dir())
