"""3D protection methods for subjects: a registry and the fit/delta split.

A method sees the training subjects as the model sees them (:class:`~unlearnable.data.subjectset.SubjectSet`:
uint8 volumes ``(N, C, D, H, W)``, label maps ``(N, D, H, W)``) and returns, per subject, a perturbation in the
same *model units* ([0, 1] of each channel's intensity window) bounded by ``eps``. ``fit`` is where everything
random or learnt happens (from the key); ``delta`` is pure. Turning a delta into stored voxel values of each
NIfTI file, with the budget checked after re-quantisation, is :mod:`.budget`'s job.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.subjectset import SubjectSet
from ..errors import UserError
from ..protect.base import make_params
from ..protect.keys import Key
from ..registry import Registry

VOLUME_METHODS: Registry[type[VolumeProtection]] = Registry("3D protection method")


class VolumeProtection:
    """Base class of a 3D method: subclasses define ``Params`` (with ``eps``), ``fit`` and ``delta``."""

    name: ClassVar[str] = "base"
    summary: ClassVar[str] = ""
    max_eps: ClassVar[float] = 16 / 255
    #: settings small enough for unit tests (tiny volumes, seconds on a CPU)
    test_params: ClassVar[dict[str, Any]] = {}

    @dataclasses.dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255

    def __init__(self, params: Any = None, device: str = "cpu", progress: bool = False, **overrides: Any):
        self.params = params if params is not None else make_params(type(self), overrides)  # type: ignore[arg-type]
        self.device = device
        self.progress = progress

    def fit(self, train: SubjectSet, key: Key, work: Path | None = None) -> Any:
        """Draw or learn the perturbation of ``train`` (the subjects to protect); ``work`` holds checkpoints."""
        raise NotImplementedError

    def delta(self, state: Any, train: SubjectSet, i: int) -> torch.Tensor:
        """Perturbation of subject ``i`` of ``train``: ``(C, D, H, W)`` float32, ``|delta| <= eps`` (model units)."""
        raise NotImplementedError

    def linf_budget(self) -> float:
        return float(self.params.eps)


def check_eps(eps: float, cls: type[VolumeProtection]) -> None:
    if not 0 < eps <= cls.max_eps + 1e-9:
        raise UserError(f"--eps {eps * 255:.4g}/255: must be in (0, {cls.max_eps * 255:.4g}/255] for "
                        f"'{cls.name}'")


def tile_to(pattern: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Repeat ``pattern`` ``(C, *t)`` periodically over the spatial ``shape`` and crop: ``(C, *shape)``."""
    reps = [1] + [-(-s // t) for s, t in zip(shape, pattern.shape[1:], strict=True)]
    out = pattern.repeat(*reps)
    return out[(slice(None), *(slice(0, s) for s in shape))]


def by_label(patterns: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pick, at every voxel, the pattern of its label: ``patterns`` ``(K, C, D, H, W)``, ``labels`` ``(D, H, W)``
    → ``(C, D, H, W)``."""
    idx = labels.long()[None, None].expand(1, patterns.shape[1], *labels.shape)
    return patterns.gather(0, idx)[0]
