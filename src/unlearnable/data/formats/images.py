"""Single image files: probing, decoding, resizing and encoding, shared by the folder-like formats.

Protected pixels are written as lossless PNG bytes under the source's own file name by default (``--image-format
png``): PIL, torchvision and every decoder that opens by content read ``x.jpg`` holding PNG bytes exactly, so the
file list users' loaders expect stays the same and the perturbation survives the save. ``keep`` re-encodes in each
file's own codec (JPEG at quality 95 for ``.jpg``), ``jpeg:Q`` writes JPEG at quality Q: both are lossy.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ...errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LOSSLESS = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")
#: grey images of more than 8 bits (16-bit PNG/TIFF exports of X-ray, CT and MR; Pillow's 32-bit integer mode):
#: read through their own intensity window and written back at their own depth (:func:`protect_high_depth`)
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: images with an alpha channel: the models read the colour (or grey) part; the writer puts the source's alpha back
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
GREY_MODES = ("L", "1", "F", "LA", "La", *HIGH_DEPTH_MODES)
KEEP_JPEG_QUALITY = 95
#: PNG is deflated with zlib's run-length strategy: measured on photographs, MRI slices and the benchmark's images,
#: files within 3% of Pillow's default size (level 6) at a third of its CPU (docs/benchmarks.md), and the same
#: PNG for every decoder (the strategy only changes how the encoder searches).
PNG_OPTIONS = {"compress_level": 1, "compress_type": zlib.Z_RLE}


def is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


# -- --image-format ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageFormat:
    """How changed images are encoded: ``png`` (lossless, default), ``keep`` (each file's own codec), ``jpeg:Q``."""

    kind: str = "png"
    quality: int = KEEP_JPEG_QUALITY

    def __str__(self) -> str:
        return f"jpeg:{self.quality}" if self.kind == "jpeg" else self.kind

    def codec(self, suffix: str) -> str:
        """The PIL format written for a file named ``*suffix``: PNG, JPEG or the suffix's own format."""
        if self.kind == "png":
            return "PNG"
        if self.kind == "jpeg":
            return "JPEG"
        return Image.registered_extensions().get(suffix.lower(), "PNG")

    def lossy_for(self, suffix: str) -> bool:
        return self.codec(suffix) in ("JPEG", "WEBP")


def parse_image_format(text: str | ImageFormat | None) -> ImageFormat:
    """``keep``, ``png`` or ``jpeg:Q`` (Q in 1..100); a UserError names the bad value otherwise."""
    if isinstance(text, ImageFormat):
        return text
    s = (text or "png").strip().lower()
    if s in ("png", "keep"):
        return ImageFormat(s)
    if s.startswith("jpeg") or s.startswith("jpg"):
        q = s.partition(":")[2] or str(KEEP_JPEG_QUALITY)
        if not q.isdigit() or not 1 <= int(q) <= 100:
            raise UserError(f"--image-format {text}: JPEG quality must be a whole number in 1..100 (e.g. jpeg:90)")
        return ImageFormat("jpeg", int(q))
    raise UserError(f"--image-format {text}: expected keep, png or jpeg:Q (e.g. jpeg:90)")


# -- decode / resize / encode -----------------------------------------------------------------------------------
def probe(path: Path) -> tuple[str, tuple[int, int], bool]:
    """(PIL mode, (H, W), whether it carries display metadata: :func:`display_info`) from the file header only; a
    broken file is named in the error."""
    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:  # a z-stack or time series: writing the first page alone would drop the others
                raise UserError(f"{path}: {frames} pages (a multi-page {im.format}); protect reads single images, "
                                "so save each page as a file of its own")
            return im.mode, (im.size[1], im.size[0]), bool(display_info(im))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UserError(f"{path}: not a readable image ({type(e).__name__})") from None


#: formats whose EXIF Pillow reads when the file is opened (for the others ``getexif()`` decodes the pixels)
EXIF_AT_OPEN = ("JPEG", "MPO", "TIFF", "WEBP")
#: codecs that can carry an ICC profile and EXIF orientation when an image is re-encoded
DISPLAY_CODECS = ("PNG", "JPEG", "WEBP")


def display_info(im: Image.Image) -> dict[str, bytes]:
    """What a viewer needs to show a re-encoded image as it showed its source: the ICC colour profile and the EXIF
    orientation, nothing else. Camera EXIF also holds GPS positions, serial numbers and times, which could identify
    a patient or a clinic; none of it is copied. Returns ``save`` keyword arguments (empty: nothing to keep)."""
    out: dict[str, bytes] = {}
    icc = im.info.get("icc_profile")
    if icc:
        out["icc_profile"] = icc
    try:
        if im.format in EXIF_AT_OPEN:
            orientation = im.getexif().get(0x0112)
        elif im.info.get("exif"):  # a PNG's eXIf chunk read with the header (getexif() would decode the image)
            exif = Image.Exif()
            exif.load(im.info["exif"])
            orientation = exif.get(0x0112)
        else:
            orientation = None
    except Exception:  # a damaged EXIF block: nothing to keep from it
        orientation = None
    if orientation not in (None, 1):
        exif = Image.Exif()
        exif[0x0112] = orientation
        out["exif"] = exif.tobytes()
    return out


def decode(raw: bytes, grey: bool, name: Path | str) -> np.ndarray:
    """Encoded bytes -> uint8 ``(C, H, W)`` with C = 1 (grey) or 3 (RGB).

    A grey image of more than 8 bits is mapped onto 0..255 through its own intensity window (the 1st..99.5th
    percentile of its non-zero pixels, as 3D scans are: :func:`~unlearnable.data.subjectset.normalise_intensity`),
    never clipped at 255 as Pillow's own conversion does; a floating-point image is refused."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.mode in HIGH_DEPTH_MODES:
                a = high_depth_view(high_depth_values(im, name), grey)
            elif im.mode == "F":
                raise UserError(f"{name}: floating-point image (mode F); save it as 8- or 16-bit integers first")
            else:
                a = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{name}: not a readable image ({type(e).__name__})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def high_depth_view(values: np.ndarray, grey: bool) -> np.ndarray:
    """The models' uint8 view of the stored integers ``(H, W)`` of a grey image of more than 8 bits: its own
    intensity window mapped onto 0..255 (:func:`~unlearnable.data.subjectset.normalise_intensity`); ``(H, W)``, or
    ``(H, W, 3)`` with the grey repeated when ``grey`` is false."""
    from ..subjectset import normalise_intensity

    a = normalise_intensity(values[None])[0].numpy()
    return a if grey else np.repeat(a[..., None], 3, axis=2)


def high_depth_values(im: Image.Image, name: Path | str) -> np.ndarray:
    """The stored integers of a grey image of more than 8 bits, ``(H, W)`` float64; values outside 0..65535 (a
    32-bit image) are refused, since they cannot be written back as 16-bit."""
    a = np.asarray(im).astype(np.float64)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise UserError(f"{name}: {im.mode} image with values {a.min():.0f}..{a.max():.0f}; only 0..65535 "
                        "(16-bit) is supported")
    return a


def alpha_of(source: bytes, name: Path | str) -> np.ndarray:
    """The alpha channel ``(H, W)`` uint8 of an encoded image with one (:data:`ALPHA_MODES`)."""
    with Image.open(io.BytesIO(source)) as im:
        rgba = im.convert("LA" if im.mode in ("LA", "La") else "RGBA")
        return np.asarray(rgba.getchannel("A"), dtype=np.uint8)


def protect_high_depth(source: bytes, protected: np.ndarray, name: str) -> np.ndarray | None:
    """The protected image at the source's own bit depth, or None when ``source`` is an 8-bit image.

    ``protected`` is the model's uint8 view ``(C, H, W)`` of the protected image; its difference from the source's
    own view (the window :func:`decode` maps onto 0..255, derived here from the stored values) is carried into the
    stored integers with the 3D budget rule (:func:`~unlearnable.data.budget.apply_delta`): a pixel changes by at
    most ``eps * (hi - lo)`` where ``[lo, hi]`` is that window and ``eps`` the largest change of the uint8 view, so
    a 16-bit X-ray keeps its 16 bits, and a reader gets the protected view back when it decodes the file."""
    with Image.open(io.BytesIO(source)) as im:
        if im.mode not in HIGH_DEPTH_MODES:
            return None
        values = high_depth_values(im, name)
    from ..budget import apply_delta
    from ..subjectset import intensity_window, normalise_intensity

    clean = normalise_intensity(values[None]).numpy()  # (1, H, W): decode's view, broadcast over the channels
    delta = (protected.astype(np.float64) - clean.astype(np.float64)).mean(0) / 255.0  # grey: one channel
    eps = float(np.abs(delta).max()) if delta.size else 0.0
    if eps == 0.0:
        return values.astype(np.uint16)
    return apply_delta(values, delta, eps, intensity_window(values), np.dtype(np.uint16)).values.astype(np.uint16)


def _pil(arr_chw: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(arr_chw[0] if arr_chw.shape[0] == 1 else arr_chw.transpose(1, 2, 0)))


def resize(arr_chw: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize uint8 ``(C, H, W)`` to ``hw`` (bicubic, or nearest for label maps); a no-op at the same size."""
    if tuple(arr_chw.shape[1:]) == tuple(hw):
        return arr_chw
    im = _pil(arr_chw).resize((hw[1], hw[0]), Image.NEAREST if nearest else Image.BICUBIC)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def encode(arr_chw: np.ndarray, codec: str, quality: int = KEEP_JPEG_QUALITY,
           display: dict[str, bytes] | None = None) -> bytes:
    """uint8 ``(C, H, W)`` (or a 16-bit grey ``(H, W)`` uint16 from :func:`protect_high_depth`) -> file bytes in
    ``codec`` (a PIL format name), with the source's ``display`` metadata (:func:`display_info`) where the codec
    carries it."""
    buf = io.BytesIO()
    kw = {"quality": quality} if codec in ("JPEG", "WEBP") else dict(PNG_OPTIONS) if codec == "PNG" else {}
    if display and codec in DISPLAY_CODECS:
        kw.update(display)
    im = Image.fromarray(np.ascontiguousarray(arr_chw)) if arr_chw.dtype == np.uint16 else _pil(arr_chw)
    im.save(buf, format=codec, **kw)
    return buf.getvalue()


def reencode(images: torch.Tensor, image_format: str | ImageFormat, suffix: str = ".jpg") -> torch.Tensor:
    """Round-trip uint8 ``(N, C, H, W)`` through the codec ``image_format`` would write for ``*suffix``, in memory.

    This is exactly what a protect output holds after the save, so the efficacy of a protection can be measured on
    what users actually get (``png`` gives back the same pixels).
    """
    fmt = parse_image_format(image_format)
    codec = fmt.codec(suffix)
    grey = images.shape[1] == 1
    out = [decode(encode(a, codec, fmt.quality), grey, f"<{codec} buffer>") for a in images.numpy()]
    return torch.from_numpy(np.stack(out)) if out else images.clone()


def hw_of(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    return (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)  # type: ignore


def stack(arrays: list[np.ndarray], size: int | tuple[int, int] | None, names: list[str]) -> tuple[torch.Tensor, bool]:
    """Stack ``(C, H, W)`` arrays into ``(N, C, H, W)``, resizing to ``size`` (N or (H, W)) if given; returns
    (images, resized). Differing sizes without ``size`` are an error naming two of them."""
    resized = False
    hw = hw_of(size)
    if hw is not None:
        resized = any(a.shape[1:] != hw for a in arrays)
        arrays = [resize(a, hw) for a in arrays]
    sizes = {a.shape[1:] for a in arrays}
    if len(sizes) > 1:
        (h0, w0), (h1, w1) = sorted(sizes)[:2]
        first = next(n for n, a in zip(names, arrays) if a.shape[1:] == (h0, w0))
        raise UserError(f"images have different sizes ({w0}x{h0} e.g. {first}, {w1}x{h1}, ...); pass --size N to "
                        f"resize to NxN")
    if not arrays:
        return torch.zeros(0, 1, 1, 1, dtype=torch.uint8), resized
    return torch.from_numpy(np.stack(arrays)), resized
