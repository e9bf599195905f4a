"""Subjects: 3D volumes with integer label maps, the unit that 3D segmentation and unlearning work on.

This module holds the type and its helpers; the readers (``formats/mrbrains.py``, ``phantoms.py``) build on it,
and ``subjects.py`` opens a source with them, so the arrows run one way (type <- readers <- loader).

Splits are always made by subject id (never by slice or patch), so a forgotten subject cannot leak into the
held-out set through its neighbouring slices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..registry import did_you_mean

# One source of truth for class names and scored labels, whichever route (folder, CSV, built-in) loads the data.
# MRBrainS18 (Kuijf et al.; the challenge's evaluation script scores labels 1-8 and masks out 9 infarction and
# 10 other): 1 cortical GM, 2 basal ganglia, 3 WM, 4 WM lesions, 5 extracerebral CSF, 6 ventricles, 7 cerebellum,
# 8 brain stem.
MRBRAINS_CLASSES = ("background", "cortical-gm", "basal-ganglia", "wm", "wm-lesions", "csf", "ventricles",
                    "cerebellum", "brainstem", "infarction", "other")
MRBRAINS_SCORED = tuple(range(1, 9))
PHANTOM_CLASSES = ("background", "csf", "gm", "wm")
LABEL_SCHEMES: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "mrbrains18": (MRBRAINS_CLASSES, MRBRAINS_SCORED),
    "brain-phantoms": (PHANTOM_CLASSES, (1, 2, 3)),
}
# MRBrainS18 modalities; an alias on the left names the same channel (older releases and tools spell them so)
MODALITY_ALIASES = {"T1_IR": "IR", "REG_IR": "IR", "REG_T1": "T1", "T2_FLAIR": "FLAIR"}


def numbered_scheme(num_classes: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Classes ``"0".."K-1"`` with every label >= 1 scored: label maps that name no known scheme."""
    return tuple(str(i) for i in range(num_classes)), tuple(range(1, num_classes))


def canonical_modality(name: str) -> str:
    """``T1_IR`` → ``IR`` and the other aliases in :data:`MODALITY_ALIASES`; any other name unchanged."""
    return MODALITY_ALIASES.get(name.strip().upper(), name.strip())


def parse_modalities(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"T1,IR,FLAIR"`` → ``("T1", "IR", "FLAIR")`` (order kept, aliases such as T1_IR → IR); empty → None."""
    if text is None:
        return None
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if not parts:
        return None
    out = tuple(canonical_modality(p) for p in parts)
    if len(set(out)) != len(out):
        raise UserError(f"--modalities '{text}': a modality is named twice")
    return out


def volume_sha256(image: torch.Tensor, label: torch.Tensor) -> str:
    """Content hash of one subject: image ``(C, D, H, W)`` uint8 and label map ``(D, H, W)``.

    Shape and dtype are part of the digest; labels are hashed as int64, so the hash depends on the voxels only,
    not on the file they came from (a NIfTI written by :func:`~.formats.nifti.write_volume` hashes the same).
    """
    h = hashlib.sha256(b"unlearnable-subject-v1:")
    h.update(repr((tuple(image.shape), str(image.dtype))).encode())
    h.update(image.contiguous().numpy().tobytes())
    h.update(label.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


# meta lists with one entry per subject, kept in step by subset(); "native_shapes" is there only when subjects of
# different shapes were zero-padded to one (load_subjects(pad=True)): each subject's own (D, H, W)
PER_SUBJECT_META = ("affines", "headers", "native_shapes")


@dataclass(frozen=True, eq=False)
class SubjectSet:
    """Subjects as ``uint8`` volumes ``(N, C, D, H, W)`` with label maps ``(N, D, H, W)`` (int64).

    ``scored`` lists the label values that Dice and MAE average over (background and challenge-excluded labels
    left out). ``modalities`` names the C channels. ``meta`` keeps what a writer needs (affine, source format).
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: tuple[str, ...]
    classes: tuple[str, ...]
    scored: tuple[int, ...]
    modalities: tuple[str, ...]
    splits: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 5:
            raise UserError(f"volumes: expected uint8 (N, C, D, H, W), got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.labels.ndim != 4 or tuple(self.labels.shape) != (n, *self.images.shape[2:]):
            raise UserError(f"label maps: shape {tuple(self.labels.shape)} does not match the volumes "
                            f"{tuple(self.images.shape)}")
        if len(self.ids) != n or len(set(self.ids)) != n:
            raise UserError(f"subject ids: expected {n} unique ids, got {len(set(self.ids))}")
        if len(self.modalities) != self.images.shape[1]:
            raise UserError(f"modalities: {len(self.modalities)} names for {self.images.shape[1]} channels")
        if not self.splits:
            object.__setattr__(self, "splits", ("train",) * n)
        if len(self.splits) != n:
            raise UserError(f"splits: {len(self.splits)} entries for {n} subjects")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise UserError(f"label maps: values must lie in 0..{len(self.classes) - 1}, found "
                            f"{int(self.labels.min())}..{int(self.labels.max())}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        d, h, w = self.images.shape[2:]
        return int(d), int(h), int(w)

    def native_shape(self, i: int) -> tuple[int, int, int]:
        """Subject ``i``'s own ``(D, H, W)``: the stack's shape unless the subjects were padded to one."""
        shapes = self.meta.get("native_shapes")
        return tuple(shapes[i]) if shapes else self.shape  # type: ignore[return-value]

    def native(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Subject ``i``'s image ``(C, D, H, W)`` and labels ``(D, H, W)`` without the padding."""
        d, h, w = self.native_shape(i)
        return self.images[i, :, :d, :h, :w], self.labels[i, :d, :h, :w]

    def index_of(self, ids: Sequence[str], what: str = "subject id") -> list[int]:
        """Positions of ``ids``; an unknown id is a one-line UserError with a suggestion."""
        pos = {s: i for i, s in enumerate(self.ids)}
        out = []
        for s in ids:
            if s not in pos:
                raise UserError(f"unknown {what} '{s}'{did_you_mean(s, self.ids)} ({len(self.ids)} subjects known)")
            out.append(pos[s])
        return out

    def subset(self, index: Sequence[int] | torch.Tensor) -> SubjectSet:
        il = [int(i) for i in torch.as_tensor(index, dtype=torch.long).tolist()]
        idx = torch.tensor(il, dtype=torch.long)
        meta = dict(self.meta)
        for key in PER_SUBJECT_META:
            if key in meta:
                meta[key] = [meta[key][i] for i in il]
        return replace(self, images=self.images[idx], labels=self.labels[idx], ids=tuple(self.ids[i] for i in il),
                       splits=tuple(self.splits[i] for i in il), meta=meta)

    def select(self, ids: Sequence[str]) -> SubjectSet:
        return self.subset(self.index_of(ids))

    def pick(self, modalities: Sequence[str] | None) -> SubjectSet:
        """Keep the channels named in ``modalities`` (in that order); None keeps all."""
        if modalities is None or tuple(modalities) == self.modalities:
            return self
        from ..registry import look_up_option

        idx = [self.modalities.index(look_up_option(m, self.modalities, "modality")) for m in modalities]
        meta = dict(self.meta)
        if "headers" in meta:
            meta["headers"] = [{m: h[m] for m in (*modalities, "label") if m in h} for h in meta["headers"]]
        return replace(self, images=self.images[:, idx], modalities=tuple(modalities), meta=meta)

    def hashes(self) -> dict[str, str]:
        """``{id: content SHA-256}`` of every subject (see :func:`volume_sha256`)."""
        return {s: volume_sha256(self.images[i], self.labels[i]) for i, s in enumerate(self.ids)}

    def with_splits(self, splits: Sequence[str]) -> SubjectSet:
        return replace(self, splits=tuple(splits))

    def ids_in(self, split: str) -> list[str]:
        return [s for s, p in zip(self.ids, self.splits, strict=True) if p == split]

    def float(self) -> torch.Tensor:
        """Volumes as float32 in [0, 1], ``(N, C, D, H, W)``."""
        return self.images.float().div_(255.0)

    def summary(self) -> dict[str, Any]:
        return {"subjects": len(self), "channels": self.channels, "modalities": list(self.modalities),
                "shape": list(self.shape), "classes": list(self.classes), "scored": list(self.scored)}


def split_by_id(ids: Sequence[str], test_fraction: float, seed: int = 0) -> list[str]:
    """Assign ``train``/``test`` per subject id, deterministic in (id, seed) and independent of input order.

    Subjects are ranked by SHA-256 of ``seed:id``; the lowest ``round(test_fraction * N)`` (at least one when the
    fraction is positive, and never all) go to ``test``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise UserError(f"--test-fraction {test_fraction}: must be in [0, 1)")
    n = len(ids)
    k = int(round(test_fraction * n))
    if test_fraction > 0:
        k = max(1, k)
    if k >= n:
        raise UserError(f"--test-fraction {test_fraction}: leaves no training subjects out of {n}")
    rank = sorted(ids, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    test = set(rank[:k])
    return ["test" if s in test else "train" for s in ids]


def resample(vol: torch.Tensor, shape: Sequence[int], labels: bool = False) -> torch.Tensor:
    """Resample ``(C, D, H, W)`` float (trilinear) or ``(D, H, W)`` int labels (nearest) to ``shape``."""
    shape = tuple(int(s) for s in shape)
    if labels:
        if tuple(vol.shape) == shape:
            return vol.long()
        return F.interpolate(vol[None, None].float(), size=shape, mode="nearest")[0, 0].round().long()
    if tuple(vol.shape[1:]) == shape:
        return vol.float()
    return F.interpolate(vol[None].float(), size=shape, mode="trilinear", align_corners=False)[0]


def intensity_window(x: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.5) -> tuple[float, float]:
    """The window ``(lo, hi)`` that :func:`normalise_intensity` maps onto 0..255 for one channel ``(D, H, W)``:
    the [lo, hi] percentiles of its non-zero voxels (of all voxels when 16 or fewer are non-zero); NaN voxels
    are left out."""
    x = np.asarray(x, dtype=np.float32)
    x = x[np.isfinite(x)]  # NaN voxels (outside a registration's field of view) hold no intensity
    if not x.size:
        return 0.0, 1.0
    fg = x[x != 0]
    ref = fg if fg.size > 16 else x.ravel()
    lo, hi = np.percentile(ref, [lo_pct, hi_pct])
    return float(lo), float(hi)


def normalise_intensity(vol: np.ndarray | torch.Tensor, lo_pct: float = 1.0, hi_pct: float = 99.5) -> torch.Tensor:
    """Per-channel robust min-max to uint8: clip to the [lo, hi] percentiles of the non-zero voxels.

    Args:
        vol: ``(C, D, H, W)`` raw intensities.
    Returns:
        ``(C, D, H, W)`` uint8.
    """
    v = torch.as_tensor(np.asarray(vol, dtype=np.float32))
    out = torch.empty(v.shape, dtype=torch.uint8)
    for c in range(v.shape[0]):
        x = v[c]
        lo, hi = intensity_window(x.numpy(), lo_pct, hi_pct)
        scale = 255.0 / max(float(hi - lo), 1e-6)
        x = torch.nan_to_num(x, nan=float(lo))  # NaN voxels read as the window's floor (background)
        out[c] = ((x - float(lo)) * scale).round().clamp(0, 255).to(torch.uint8)
    return out


def parse_shape(text: str | Sequence[int] | None) -> tuple[int, int, int] | None:
    """``"48,96,96"`` or ``"32"`` (a cube) → ``(D, H, W)``; None stays None."""
    if text is None or text == "":
        return None
    parts = [p for p in str(text).replace("x", ",").split(",") if p.strip()] if isinstance(text, str) else list(text)
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--shape '{text}': expected D,H,W integers") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or min(vals) < 8:
        raise UserError(f"--shape '{text}': expected three sizes >= 8 (D,H,W)")
    return vals[0], vals[1], vals[2]
