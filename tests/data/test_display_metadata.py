"""A re-encoded protected image shows as its source did: the ICC colour profile and the EXIF orientation are kept;
nothing else from the camera's EXIF (GPS position, serial number, time) is copied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from helpers import run_cli

GPS, SERIAL, ORIENTATION = 0x8825, 0xA431, 0x0112


def _photo(path: Path, rng: np.random.Generator, orientation: int | None, icc: bytes | None) -> None:
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif[SERIAL] = "CAM-0042"  # camera serial: must not reach the output
    exif[0x9003] = "2026:01:02 03:04:05"  # time taken
    im = Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8))
    im.save(path, quality=95, exif=exif.tobytes(), **({"icc_profile": icc} if icc else {}))


@pytest.mark.parametrize("image_format", ["png", "keep"])
def test_orientation_and_colour_profile_survive_and_nothing_else(tmp_path, capsys, image_format):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rng = np.random.default_rng(0)
    src = tmp_path / "lesions"
    for split, n in (("train", 4), ("test", 2)):
        for c in ("benign", "malignant"):
            (src / split / c).mkdir(parents=True)
            for j in range(n):
                _photo(src / split / c / f"{j}.jpg", rng, 6 if j % 2 else None, icc if j < 2 else None)
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(src), "-m", "tiles", "-o", str(out), "--image-format", image_format],
                           capsys)
    assert code == 0, err
    for f in sorted((src / "train").rglob("*.jpg")):
        with Image.open(f) as a, Image.open(out / f.relative_to(src)) as b:
            ea, eb = a.getexif(), b.getexif()
            assert eb.get(ORIENTATION, 1) == ea.get(ORIENTATION, 1)
            assert b.info.get("icc_profile") == a.info.get("icc_profile")
            assert SERIAL in ea and SERIAL not in eb and 0x9003 not in eb and GPS not in eb
            assert b.size == a.size


def test_listing_a_png_folder_reads_headers_only(tmp_path, monkeypatch):
    """Probing runs on every file when a source is listed: it must not decode pixels (Pillow's getexif() decodes a
    PNG to find a late eXIf chunk; a 100,000-image folder would be decoded twice)."""
    from PIL import PngImagePlugin

    from unlearnable.data.formats.images import probe

    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png", exif=exif.tobytes())
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b.png")

    def no_decoding(self, *a, **k):
        raise AssertionError("probe decoded the pixels")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    assert probe(tmp_path / "a.png") == ("RGB", (8, 8), True)  # the orientation is seen from the header
    assert probe(tmp_path / "b.png") == ("RGB", (8, 8), False)
