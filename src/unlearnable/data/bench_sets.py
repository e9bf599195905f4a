"""Built-in benchmark datasets cut from real images that ship inside installed wheels (nothing is downloaded).

* ``mni-tissue``: grey patches of nilearn's MNI152 T1 template (ICBM 2009a, 1 mm), labelled background / CSF /
  grey matter / white matter by the tissue that dominates at the patch centre (nilearn's GM and WM probability
  maps; CSF is the brain mask's remainder). Train and test come from different axial slabs with a gap of slices
  between them, so no test voxel (or its immediate neighbour slice) is ever seen in training.
* ``textures``: RGB crops of ten photographs shipped by scikit-learn and scikit-image (a fundus image, a histology
  stain, a cat, a rocket, ...); the class is the photograph. Train crops come from the left 70% of each
  photograph, test crops from the right 30%, so train and test never share a pixel.
* ``grey-photos``: grey crops, cut the same way, of ten *other* photographs shipped by scikit-image (brick, grass,
  gravel, a cameraman, coins, the moon, a printed page, text, a cell, a retinal detail). No default of a method was
  chosen on them: they are the held-out check of the defaults (docs/benchmarks.md, "Held-out data").

All three are deterministic functions of their options (``seed`` included) and take a few seconds to build.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

TISSUES = ("background", "csf", "gm", "wm")
NORM_MEAN, NORM_STD = 128.0, 40.0  # ``normalise=1``: every image's channels get this mean and standard deviation
MNI_DEFAULTS = {"n": 2000, "test": 500, "size": 32, "seed": 0, "normalise": 0}
# Axial slices repeat in blocks of 40: slices 0-27 train, 32-37 test; the 4- and 2-slice gaps are dropped so a
# test patch never has its neighbouring slice (1 mm away, nearly identical) in the training split.
SLAB, TRAIN_END, TEST_START, TEST_END = 40, 28, 32, 38
MIN_TISSUE = 0.6  # a tissue label needs this probability at the centre voxel (unambiguous centres only)
MIN_BRAIN = 0.25  # background patches must show at least this fraction of brain (no trivially black patches)

PHOTOS = (  # (package, file, class name)
    ("sklearn.datasets.images", "china.jpg", "temple"),
    ("sklearn.datasets.images", "flower.jpg", "flower"),
    ("skimage.data", "astronaut.png", "astronaut"),
    ("skimage.data", "chelsea.png", "cat"),
    ("skimage.data", "coffee.png", "coffee"),
    ("skimage.data", "rocket.jpg", "rocket"),
    ("skimage.data", "hubble_deep_field.jpg", "galaxies"),
    ("skimage.data", "ihc.png", "histology"),
    ("skimage.data", "retina.jpg", "retina"),
    ("skimage.data", "motorcycle_left.png", "motorcycle"),
)
# Grey photographs that no method's default was tuned on (the held-out set); none is among PHOTOS.
GREY_PHOTOS = (
    ("skimage.data", "brick.png", "brick"),
    ("skimage.data", "grass.png", "grass"),
    ("skimage.data", "gravel.png", "gravel"),
    ("skimage.data", "camera.png", "cameraman"),
    ("skimage.data", "coins.png", "coins"),
    ("skimage.data", "moon.png", "moon"),
    ("skimage.data", "page.png", "page"),
    ("skimage.data", "text.png", "text"),
    ("skimage.data", "cell.png", "cell"),
    ("skimage.data", "microaneurysms.png", "fundus"),
)
GREY_PHOTO_DEFAULTS = {"n": 2000, "test": 500, "size": 32, "seed": 0, "normalise": 0}
TEXTURE_DEFAULTS = {"n": 2000, "test": 500, "size": 32, "seed": 0, "normalise": 0, "grey": 0}
SHORT_SIDE = 256  # every photograph is first resized to this short side, so a crop covers a similar scale
TRAIN_FRACTION = 0.7  # of each photograph's width
MIN_STD = 8.0  # grey levels: near-uniform crops (black fundus corners, empty sky) say nothing about the class


def _per_class(total: int, k: int) -> list[int]:
    """Split ``total`` samples over ``k`` classes as evenly as possible (balanced classes)."""
    return [total // k + (1 if c < total % k else 0) for c in range(k)]


# ------------------------------------------------------------------------------------------------ mni-tissue
@functools.lru_cache(maxsize=1)
def _mni_maps() -> tuple[np.ndarray, np.ndarray]:
    """MNI152 T1 in [0, 1] and the label map (-1 where no class is unambiguous), both ``(X, Y, Z)`` float/int."""
    try:
        from nilearn import datasets  # local import: slow to import, and only these datasets need it
    except ImportError:
        raise UserError("mni-tissue: needs nilearn (pip install nilearn); its MNI152 maps ship inside it") from None
    t1, mask, gm, wm = (np.asarray(f(resolution=1).get_fdata(), dtype=np.float32) for f in (
        datasets.load_mni152_template, datasets.load_mni152_brain_mask, datasets.load_mni152_gm_template,
        datasets.load_mni152_wm_template))
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    probs = np.stack([csf, gm, wm])
    tissue = 1 + probs.argmax(0)
    label = np.where(probs.max(0) >= MIN_TISSUE, tissue, -1)
    label = np.where(mask > 0.5, label, 0)
    return t1 / max(float(t1.max()), 1e-6), label.astype(np.int64)


def _slab_split(z: int) -> str | None:
    r = z % SLAB
    return "train" if r < TRAIN_END else "test" if TEST_START <= r < TEST_END else None


def _window_fraction(mask: np.ndarray, size: int) -> np.ndarray:
    """Fraction of ``mask`` in the in-slice ``size x size`` window at every voxel ``(X, Y, Z)`` (summed-area table).

    The window spans ``[x - size//2, x - size//2 + size)`` in x and y, as the patches cut below do."""
    half = size // 2
    padded = np.pad(mask.astype(np.float32), ((half + 1, size - half), (half + 1, size - half), (0, 0)))
    sat = padded.cumsum(0).cumsum(1)
    x, y = mask.shape[:2]
    total = sat[size:size + x, size:size + y] - sat[:x, size:size + y] - sat[size:size + x, :y] + sat[:x, :y]
    return total / float(size * size)


def _flag(dataset: str, name: str, value: int) -> None:
    if value not in (0, 1):
        raise UserError(f"{dataset}: {name}={value}; choose 0 or 1")


def _uint8(grey_levels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(grey_levels), 0, 255).astype(np.uint8)


def _grey(levels: np.ndarray, normalise: int) -> np.ndarray:
    """Grey levels ``(N, H, W)`` (float) as uint8, every image standardised first when ``normalise``."""
    return _standardise(levels[..., None])[..., 0] if normalise else _uint8(levels)


def _standardise(images: np.ndarray) -> np.ndarray:
    """Every image's channels (``(N, H, W, C)``, float) to :data:`NORM_MEAN` / :data:`NORM_STD`, then uint8."""
    mean, std = images.mean(axis=(1, 2), keepdims=True), images.std(axis=(1, 2), keepdims=True)
    return _uint8((images - mean) / np.maximum(std, 1.0) * NORM_STD + NORM_MEAN)


def mni_tissue(n: int = 2000, test: int = 500, size: int = 32, seed: int = 0, normalise: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``n`` train and ``test`` test patches ``(size, size)`` uint8, balanced over the four tissues.

    ``normalise=1`` gives every patch the same mean and standard deviation (:data:`NORM_MEAN`, :data:`NORM_STD`),
    as per-image intensity normalisation does, so a patch's overall brightness no longer tells its tissue (the
    centre's brightness against its surroundings still does).

    Returns (images ``(N, H, W)``, labels ``(N,)``, splits ``(N,)``, class names).
    """
    if size < 8 or size > 96:
        raise UserError(f"mni-tissue: size={size}; choose 8..96 pixels")
    _flag("mni-tissue", "normalise", normalise)
    t1, label = _mni_maps()
    half = size // 2
    img = np.pad(t1, ((half, half), (half, half), (0, 0)))
    frac = _window_fraction(label != 0, size)
    rng = np.random.default_rng([seed, 20240611])
    images, labels, splits = [], [], []
    for split, total in (("train", n), ("test", test)):
        zs = np.array([z for z in range(t1.shape[2]) if _slab_split(z) == split])
        for c, count in enumerate(_per_class(total, len(TISSUES))):
            ok = label[:, :, zs] == c
            if c == 0:
                ok &= frac[:, :, zs] >= MIN_BRAIN
            cand = np.argwhere(ok)
            if len(cand) < count:
                raise UserError(f"mni-tissue: only {len(cand)} {TISSUES[c]} centres in the {split} slabs; ask fewer")
            for x, y, zi in cand[rng.choice(len(cand), size=count, replace=False)]:
                images.append(img[x:x + size, y:y + size, zs[zi]])  # padded coords: centre at x+half
                labels.append(c)
                splits.append(split)
    arr = np.stack(images)
    # Radiological convention: rotate so anterior is up, as slices are usually shown.
    arr = np.rot90(arr, k=1, axes=(1, 2))
    levels = arr * 255.0
    out = _standardise(levels[..., None])[..., 0] if normalise else _uint8(levels)
    return out, np.array(labels, dtype=np.int64), np.array(splits), TISSUES


# ------------------------------------------------------------------------------------------------ textures
@functools.lru_cache(maxsize=2)
def _photos(photos: tuple[tuple[str, str, str], ...] = PHOTOS, dataset: str = "textures"
            ) -> tuple[torch.Tensor, ...]:
    """``photos`` as float ``(3, H, W)`` in [0, 255] (grey ones repeated over three channels), short side resized
    to ``SHORT_SIDE``."""
    from PIL import Image

    out = []
    for pkg, name, _ in photos:
        try:
            with Image.open(resources.files(pkg) / name) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32)
        except (ModuleNotFoundError, FileNotFoundError):
            dist = "scikit-learn" if pkg.startswith("sklearn") else "scikit-image"
            raise UserError(f"{dataset}: {pkg}/{name} not found; install {dist} (the image ships inside its wheel)"
                            ) from None
        t = torch.from_numpy(arr).permute(2, 0, 1)[None]
        h, w = t.shape[-2:]
        s = SHORT_SIDE / min(h, w)
        out.append(F.interpolate(t, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True,
                                 align_corners=False)[0])
    return tuple(out)


def _crops(photos: tuple[tuple[str, str, str], ...], dataset: str, n: int, test: int, size: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` train and ``test`` test RGB crops ``(size, size, 3)`` uint8 of ``photos``, balanced, train crops from
    the left :data:`TRAIN_FRACTION` of each photograph and test crops from the rest: (images, labels, splits)."""
    if size < 8 or size > 64:
        raise UserError(f"{dataset}: size={size}; choose 8..64 pixels")
    pictures = _photos(photos, dataset)
    rng = np.random.default_rng([seed, 20240612])
    images, labels, splits = [], [], []
    for split, total in (("train", n), ("test", test)):
        for c, count in enumerate(_per_class(total, len(photos))):
            photo = pictures[c]
            h, w = photo.shape[-2:]
            cut = int(TRAIN_FRACTION * w)
            lo, hi = (0, cut) if split == "train" else (cut, w)
            got = tries = 0
            while got < count:
                tries += 1
                if tries > 50 * count:  # cannot happen with the shipped photographs; guards a changed wheel
                    raise UserError(f"{dataset}: too few non-uniform crops in {photos[c][1]} ({split})")
                side = int(rng.integers(size, min(2 * size, hi - lo, h) + 1))
                y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(lo, hi - side + 1))
                crop = photo[None, :, y:y + side, x:x + side]
                if float(crop.std(dim=(2, 3)).mean()) < MIN_STD:
                    continue
                small = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                images.append(small[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())
                labels.append(c)
                splits.append(split)
                got += 1
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(splits)


def textures(n: int = 2000, test: int = 500, size: int = 32, seed: int = 0, normalise: int = 0, grey: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``n`` train and ``test`` test RGB crops ``(size, size, 3)`` uint8, balanced over the ten photographs.

    A crop is a random square of side ``size`` to ``2 * size`` pixels (at a short side of 256) resized to ``size``,
    so the victim sees each photograph at varying scales. Returns (images ``(N, H, W, 3)``, labels, splits, names).

    The same crops without the cues that name a photograph by its colour (docs/benchmarks.md, "Colour taken
    away"): ``grey=1`` keeps the luminance only (``(N, H, W)``, ITU-R 601 weights); ``normalise=1`` gives every
    crop's channels the same mean and standard deviation (:data:`NORM_MEAN`, :data:`NORM_STD`), as colour or
    stain normalisation does, so neither a crop's mean colour nor its contrast tells its class.
    """
    _flag("textures", "normalise", normalise)
    _flag("textures", "grey", grey)
    out, labels, splits = _crops(PHOTOS, "textures", n, test, size, seed)
    if grey:
        out = _grey(out.astype(np.float64) @ np.array([0.299, 0.587, 0.114]), normalise)
    elif normalise:
        out = _standardise(out.astype(np.float64))
    return out, labels, splits, tuple(p[2] for p in PHOTOS)


def grey_photos(n: int = 2000, test: int = 500, size: int = 32, seed: int = 0, normalise: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``n`` train and ``test`` test grey crops ``(size, size)`` uint8 of :data:`GREY_PHOTOS`, cut as
    :func:`textures` cuts its photographs; ``normalise=1`` standardises every crop (:data:`NORM_MEAN`,
    :data:`NORM_STD`). Returns (images ``(N, H, W)``, labels, splits, names)."""
    _flag("grey-photos", "normalise", normalise)
    out, labels, splits = _crops(GREY_PHOTOS, "grey-photos", n, test, size, seed)
    # the photographs are grey: every channel holds the same levels
    return _grey(out[..., 0].astype(np.float64), normalise), labels, splits, tuple(p[2] for p in GREY_PHOTOS)
