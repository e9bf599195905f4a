"""Readers and writers, one format per file, registered in :data:`FORMATS`."""

from __future__ import annotations

from ...registry import Registry

FORMATS: Registry = Registry("format")

from . import builtin, folder, npz, torchvision_roots  # noqa: E402,F401
