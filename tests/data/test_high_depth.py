"""Grey images of more than 8 bits (16-bit PNG/TIFF exports of X-ray, CT and MR): read through their own intensity
window, never clipped at 255, and written back at their own depth within the budget of that window."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli
from unlearnable.data.formats.images import decode, high_depth_values
from unlearnable.data.subjectset import intensity_window, normalise_intensity
from unlearnable.errors import UserError


def _xray(rng: np.random.Generator, label: int, size: int = 24) -> np.ndarray:
    """A 12-bit-like exposure in a 16-bit file: a bright disc whose side depends on the class, on a dark field."""
    yy, xx = np.mgrid[0:size, 0:size]
    cx = size * (0.3 if label == 0 else 0.7)
    disc = ((yy - size / 2) ** 2 + (xx - cx) ** 2) < (size / 4) ** 2
    return np.clip(800 + 2400 * disc + rng.normal(0, 120, (size, size)), 0, 65535).astype(np.uint16)


def _folder(root: Path, suffix: str = ".png", n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", n // 2)):
        for label, name in enumerate(("normal", "effusion")):
            d = root / split / name
            d.mkdir(parents=True)
            for j in range(count):
                Image.fromarray(_xray(rng, label)).save(d / f"{name}{j}{suffix}")
    return root


def test_decode_maps_16_bit_through_the_window_instead_of_clipping():
    a = _xray(np.random.default_rng(1), 0)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    got = decode(buf.getvalue(), True, "x.png")
    assert got.dtype == np.uint8 and got.shape == (1, 24, 24)
    assert np.array_equal(got, normalise_intensity(a.astype(np.float64)[None]).numpy())
    assert (got == 255).mean() < 0.1 and got.std() > 40  # Pillow's convert("L") gives 255 almost everywhere
    rgb = decode(buf.getvalue(), False, "x.png")
    assert rgb.shape == (3, 24, 24) and np.array_equal(rgb[0], got[0]) and np.array_equal(rgb[2], got[0])


def test_out_of_range_and_float_images_are_refused():
    with pytest.raises(UserError, match=r"x\.png: I image with values -5\.\.70000; only 0\.\.65535"):
        high_depth_values(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)), "x.png")
    buf = io.BytesIO()
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(buf, format="TIFF")
    with pytest.raises(UserError, match="floating-point image"):
        decode(buf.getvalue(), True, "f.tif")


@pytest.mark.parametrize("suffix,image_format", [(".png", "png"), (".tif", "keep")])
def test_protect_writes_16_bit_images_at_16_bit_within_the_window_budget(tmp_path, capsys, suffix, image_format):
    src = _folder(tmp_path / "xrays", suffix)
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(src), "--method", "tiles", "--eps", "8/255", "-o", str(out),
                            "--image-format", image_format], capsys)
    assert code == 0, err
    assert "lossily" not in err  # 16-bit PNG/TIFF is lossless, though a reader's view is re-windowed
    m = json.loads((out / "manifest.json").read_text())
    assert 29.5 < m["metrics"]["train"]["psnr_db"] < 33  # measured on the 8-bit view the models read
    for f in sorted(src.rglob(f"*{suffix}")):
        rel = f.relative_to(src)
        if rel.parts[0] == "test":
            assert (out / rel).read_bytes() == f.read_bytes()
            continue
        with Image.open(f) as a, Image.open(out / rel) as b:
            assert b.mode == "I;16" and b.size == a.size
            clean, prot = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
        lo, hi = intensity_window(clean.astype(np.float64))
        change = np.abs(prot - clean)
        assert 0.9 * 8 / 255 * (hi - lo) < change.max() <= 8 / 255 * (hi - lo)  # the whole budget, never more
        # a reader re-estimates the window on the protected file: its percentiles move with the change, so a
        # uniform part of it cancels in the view and a few pixels move up to twice the budget
        view = decode((out / rel).read_bytes(), True, rel).astype(int) - decode(f.read_bytes(), True, rel).astype(int)
        assert (view != 0).mean() > 0.7 and np.abs(view).max() <= 16  # (each run draws a new key)
    # the manifest's quality is measured on what a reader decodes from the written files
    assert m["metrics"]["train"]["linf_max"] > 8 / 255
    # torchvision's ImageFolder reads the output as it reads the source: same files, classes, modes and sizes
    from torchvision.datasets import ImageFolder

    def raw(p):
        with Image.open(p) as im:
            return im.mode, im.size

    a, b = ImageFolder(str(src / "train"), loader=raw), ImageFolder(str(out / "train"), loader=raw)
    assert a.classes == b.classes and len(a) == len(b) == 16 and [a[i] for i in range(16)] == [b[i] for i in range(16)]


def test_a_protected_16_bit_folder_trains_like_any_other(tmp_path, capsys):
    src = _folder(tmp_path / "xrays")
    out = tmp_path / "prot"
    assert run_cli(["protect", str(src), "--method", "tiles", "-o", str(out)], capsys)[0] == 0
    code, _, err = run_cli(["evaluate", "--protected", str(out), "--clean", str(src), "--epochs", "1",
                            "--batch-size", "8", "--out", str(tmp_path / "ev"), "--device", "cpu"], capsys)
    assert code in (0, 3), err
    r = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert r["data"]["image_shape"] == [1, 24, 24] and r["data"]["test"] == 8


def test_a_multi_page_tiff_is_refused_before_anything_is_written(tmp_path, capsys):
    """A z-stack saved as one TIFF: writing its first page alone would silently drop the others."""
    src = _folder(tmp_path / "stacks", ".tif")
    pages = [Image.fromarray(_xray(np.random.default_rng(k), 0)) for k in range(3)]
    stack = src / "train" / "normal" / "normal0.tif"
    pages[0].save(stack, save_all=True, append_images=pages[1:])
    code, _, err = run_cli(["protect", str(src), "-m", "tiles", "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert "normal0.tif: 3 pages (a multi-page TIFF)" in err and not (tmp_path / "out").exists()
