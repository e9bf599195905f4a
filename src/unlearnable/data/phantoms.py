"""Built-in ``brain-phantoms``: synthetic subjects made from the MNI152 template that nilearn ships offline.

Labels (background / CSF / GM / WM) come from nilearn's brain mask and GM/WM probability maps (CSF is the brain
mask's remainder, ``1 - GM - WM``). Each synthetic subject is individualised by a smooth random deformation, a
multiplicative bias field, a contrast (gamma) change and Rician noise, all drawn from ``(seed, index)``, so the set is
deterministic. These are synthetic phantoms, not patients: results on them say how the code behaves, not how a
method would do on real MRI.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .subjectset import PHANTOM_CLASSES, SubjectSet, normalise_intensity

PHANTOM_MODALITIES = ("T1", "IR", "FLAIR")  # the MRBrainS18 sequences, so a written set has the published layout
PHANTOM_DEFAULTS = {"n": 12, "size": 32, "channels": 1, "seed": 0, "deform": 0.06}


@functools.lru_cache(maxsize=4)
def _template(size: int) -> tuple[torch.Tensor, np.ndarray]:
    """MNI152 (T1, brain mask, GM, WM) cropped to the brain and resampled to ``size``³: ``(4, S, S, S)`` float, and
    the voxel-to-MNI affine (4, 4) of that grid."""
    from nilearn import datasets  # local import: nilearn is slow to import and only needed here

    maps = [datasets.load_mni152_template(resolution=2), datasets.load_mni152_brain_mask(resolution=2),
            datasets.load_mni152_gm_template(resolution=2), datasets.load_mni152_wm_template(resolution=2)]
    arrs = [np.asarray(m.get_fdata(), dtype=np.float32) for m in maps]
    nz = np.argwhere(arrs[1] > 0.5)
    lo, hi = np.maximum(nz.min(0) - 2, 0), nz.max(0) + 3
    crop = np.stack([a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] for a in arrs])
    t = torch.from_numpy(crop)[None]
    affine = maps[0].affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    affine[:3, :3] = affine[:3, :3] * ((hi - lo) / size)[None, :]
    return F.interpolate(t, size=(size,) * 3, mode="trilinear", align_corners=False)[0], affine


def _smooth_field(rng: np.random.Generator, size: int, channels: int, coarse: int, std: float) -> torch.Tensor:
    """A smooth random field ``(channels, S, S, S)``: Gaussian noise on a coarse grid, upsampled trilinearly."""
    g = torch.from_numpy(rng.normal(0.0, std, (1, channels, coarse, coarse, coarse)).astype(np.float32))
    return F.interpolate(g, size=(size,) * 3, mode="trilinear", align_corners=True)[0]


def make_phantom(index: int, size: int = 32, channels: int = 1, seed: int = 0, deform: float = 0.06,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic subject: ``(C, S, S, S)`` uint8 volume and ``(S, S, S)`` int64 labels (0 bg, 1 CSF, 2 GM, 3 WM)."""
    rng = np.random.default_rng([seed, index, 17])
    base = _template(size)[0]  # (4, S, S, S): t1, mask, gm, wm
    # smooth deformation: displacement in normalised [-1, 1] coordinates, applied to all maps at once
    axes = torch.linspace(-1, 1, size)
    grid = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij")[::-1], -1)  # (S, S, S, 3) as (x, y, z)
    disp = _smooth_field(rng, size, 3, 4, deform).permute(1, 2, 3, 0)
    scale = torch.from_numpy(rng.uniform(0.92, 1.08, 3).astype(np.float32))  # head size varies between subjects
    warped = F.grid_sample(base[None], (grid * scale + disp)[None], mode="bilinear", padding_mode="zeros",
                           align_corners=True)[0]
    t1, mask, gm, wm = warped
    csf = (1.0 - gm - wm).clamp(min=0.0)
    labels = torch.where(mask > 0.5, 1 + torch.stack([csf, gm, wm]).argmax(0), torch.zeros_like(mask).long())
    if not 1 <= channels <= len(PHANTOM_MODALITIES):
        raise UserError(f"brain-phantoms: channels={channels}; 1 to 3 ({', '.join(PHANTOM_MODALITIES)}) are available")
    brain = mask.clamp(0, 1)
    vols = [t1 / max(float(t1.max()), 1e-6),
            brain * (0.1 * csf + 0.55 * gm + 0.9 * wm),  # T1-weighted inversion recovery: CSF dark, WM bright
            brain * (0.15 * csf + 0.75 * gm + 0.5 * wm)][:channels]  # FLAIR: CSF suppressed, GM above WM
    out = []
    for v in vols:
        bias = torch.exp(_smooth_field(rng, size, 1, 3, 0.15)[0])
        gamma = float(rng.uniform(0.7, 1.4))
        x = (v.clamp(min=0) ** gamma) * bias
        sigma = float(rng.uniform(0.01, 0.04))
        n1 = torch.from_numpy(rng.normal(0, sigma, x.shape).astype(np.float32))
        n2 = torch.from_numpy(rng.normal(0, sigma, x.shape).astype(np.float32))
        out.append(torch.sqrt((x + n1) ** 2 + n2 ** 2))  # Rician magnitude noise, as in MR magnitude images
    return normalise_intensity(torch.stack(out)), labels.long()


def parse_spec(spec: str) -> dict[str, float]:
    """``brain-phantoms[:n=8,size=24,channels=1,seed=0,deform=0.06]`` → options (defaults filled in)."""
    opts = dict(PHANTOM_DEFAULTS)
    _, _, rest = spec.partition(":")
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        if not eq or k not in opts:
            raise UserError(f"brain-phantoms: bad option '{part}' (options: {', '.join(PHANTOM_DEFAULTS)})")
        try:
            opts[k] = type(PHANTOM_DEFAULTS[k])(float(v)) if k != "deform" else float(v)
        except ValueError:
            raise UserError(f"brain-phantoms: option {k}='{v}' is not a number") from None
    if opts["n"] < 3 or opts["size"] < 16:
        raise UserError("brain-phantoms: need n >= 3 subjects and size >= 16")
    return opts


def brain_phantoms(n: int = 12, size: int = 32, channels: int = 1, seed: int = 0, deform: float = 0.06) -> SubjectSet:
    """``n`` synthetic subjects ``synth-000``… of ``size``³ voxels; channel k is the same whatever ``channels``."""
    vols = [make_phantom(i, size, channels, seed, deform) for i in range(n)]
    spec = dict(n=n, size=size, channels=channels, seed=seed, deform=deform)
    return SubjectSet(torch.stack([v[0] for v in vols]), torch.stack([v[1] for v in vols]),
                      tuple(f"synth-{i:03d}" for i in range(n)), PHANTOM_CLASSES, (1, 2, 3),
                      PHANTOM_MODALITIES[:channels],
                      meta={"format": "brain-phantoms", "synthetic": True, "labels": "brain-phantoms", "spec": spec,
                            "affines": [_template(size)[1]] * n,
                            "descrip": "unlearnable brain-phantoms " + ",".join(f"{k}={v}" for k, v in spec.items())
                                       + " (synthetic)"})
