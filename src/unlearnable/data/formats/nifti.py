"""NIfTI volumes, read and written faithfully.

A volume read here keeps its header (:class:`VolumeHeader`): affine, qform/sform and their codes, xyzt units,
description, intent, on-disk data type and scaling (``scl_slope``/``scl_inter``, which nibabel moves from the header
into the array proxy on load). :func:`write_volume` writes values back through that header, so a volume that a
command did not change is written with the same header fields, the same data type and the same stored integers;
values that the header's type and scaling cannot hold are refused, never clipped or rescaled silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ...errors import UserError

LABEL_INTENT = 1002  # NIFTI_INTENT_LABEL: voxel values are indices into a list of labels (intent_name names it)


@dataclass(frozen=True, eq=False)
class VolumeHeader:
    """A NIfTI header as read (``header``, its scaling in ``slope``/``inter``) and the file it came from."""

    header: nib.Nifti1Header
    slope: float = 1.0
    inter: float = 0.0
    path: str = ""

    @property
    def affine(self) -> np.ndarray:
        return self.header.get_best_affine()

    @property
    def dtype(self) -> np.dtype:
        return self.header.get_data_dtype()

    @property
    def scheme(self) -> str | None:
        """The label scheme a label map names in its intent (``intent_name``), if it declares one."""
        if int(self.header["intent_code"]) != LABEL_INTENT:
            return None
        return self.header.get_intent()[2] or None

    def as_label_map(self, scheme: str, descrip: str | None = None) -> VolumeHeader:
        """A copy that declares a label map of ``scheme`` (NIfTI label intent; ``descrip`` replaced if given)."""
        h = self.header.copy()
        h.set_intent(LABEL_INTENT, (), scheme[:15])
        if descrip is not None:
            h["descrip"] = descrip.encode()[:79]
        return VolumeHeader(h, self.slope, self.inter, self.path)

    def with_affine(self, affine: np.ndarray) -> VolumeHeader:
        """The same header on another grid (after resampling): qform/sform replaced, their codes kept."""
        h = self.header.copy()
        h.set_qform(affine, int(h["qform_code"]) or 1)
        h.set_sform(affine, int(h["sform_code"]) or 1)
        return VolumeHeader(h, self.slope, self.inter, self.path)


def new_header(affine: np.ndarray, dtype: type | np.dtype = np.uint8, descrip: str = "", code: int = 1,
               scheme: str | None = None) -> VolumeHeader:
    """A fresh header: qform = sform = ``affine`` with ``code`` (1 scanner), mm/s units, optional label intent."""
    h = nib.Nifti1Header()
    h.set_data_dtype(dtype)
    h.set_qform(affine, code)
    h.set_sform(affine, code)
    h.set_xyzt_units("mm", "sec")
    h["descrip"] = descrip.encode()[:79]
    if scheme is not None:
        h.set_intent(LABEL_INTENT, (), scheme[:15])
    return VolumeHeader(h)


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeHeader]:
    """Read a 3D NIfTI: values (scaled when the file is scaled; the stored type otherwise) and its header."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for a broken file
        raise UserError(f"{path}: not a readable NIfTI file ({type(e).__name__})") from None
    if not isinstance(img, nib.Nifti1Pair):
        raise UserError(f"{path}: not a NIfTI file ({type(img).__name__})")
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise UserError(f"{path}: expected a 3D volume, got shape {data.shape}")
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    return data, VolumeHeader(img.header.copy(), float(slope), float(inter), str(path))


def write_volume(path: str | Path, values: np.ndarray, like: VolumeHeader, dtype: type | np.dtype | None = None,
                 ) -> Path:
    """Write ``values`` (D, H, W) through ``like``'s header: same geometry, codes, units, description, intent,
    type and scaling (``dtype`` stores the values as that type, unscaled, instead).

    Stored integers are ``(values - inter) / slope``; values that do not map onto the type exactly are refused.
    """
    path = Path(path)
    hdr = like.header.copy()
    slope, inter = like.slope, like.inter
    if dtype is not None:
        hdr.set_data_dtype(dtype)
        slope, inter = 1.0, 0.0
    out = hdr.get_data_dtype()
    vals = np.asarray(values)
    raw = vals if (slope, inter) == (1.0, 0.0) else (vals.astype(np.float64) - inter) / slope
    if np.issubdtype(out, np.integer):
        info = np.iinfo(out)
        rounded = np.rint(raw)
        if raw.size and (not np.allclose(raw, rounded, rtol=0, atol=1e-3)
                         or rounded.min() < info.min or rounded.max() > info.max):
            raise UserError(f"{path}: values {vals.min()}..{vals.max()} cannot be stored as {out} "
                            f"(slope {slope}, intercept {inter})")
        raw = rounded
    klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = klass(np.ascontiguousarray(raw).astype(out), None, hdr)
    img.header.set_slope_inter(slope, inter)  # explicit scaling: nibabel then stores the integers as given
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def same_grid(a: VolumeHeader, b: VolumeHeader, atol: float = 1e-3) -> float:
    """0.0 when two volumes share a voxel-to-world affine (to ``atol`` mm), else the largest difference."""
    diff = float(np.abs(a.affine - b.affine).max())
    return 0.0 if diff <= atol else diff
