"""Readers and writers, one format per file, registered in :data:`FORMATS`: 2D image sources, and the 3D subject
sources (``dims = 3``: the MRBrainS18 folder layout and CSVs of NIfTI paths, read as :class:`SubjectSet`)."""

from __future__ import annotations

from ...registry import Registry

FORMATS: Registry = Registry("format")

from . import builtin, folder, mrbrains, npz, torchvision_roots  # noqa: E402,F401
