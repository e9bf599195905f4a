"""Images with an alpha channel (microscopy exports, overlays, screenshots): the models read the colour or grey part,
and the protected file keeps the source's alpha and its mode (RGBA stays RGBA, grey+alpha stays grey+alpha)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli


def _folder(root: Path, mode: str) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for j in range(n):
                rgb = (rng.random((20, 20, 3)) * 255).astype(np.uint8)
                alpha = (rng.random((20, 20)) * 255).astype(np.uint8)
                im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
                (im if mode == "RGBA" else im.convert(mode)).save(root / split / c / f"{j}.png")
    return root


@pytest.mark.parametrize("mode,channels", [("RGBA", 3), ("LA", 1)])
def test_alpha_is_kept_and_the_mode_too(tmp_path, capsys, mode, channels):
    src = _folder(tmp_path / "src", mode)
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(src), "--method", "tiles", "--eps", "8/255", "-o", str(out)], capsys)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert 29.5 < m["metrics"]["train"]["psnr_db"] < 33 and m["metrics"]["train"]["linf_max"] <= 8 / 255 + 1e-9
    for f in sorted((src / "train").rglob("*.png")):
        with Image.open(f) as a, Image.open(out / f.relative_to(src)) as b:
            assert b.mode == a.mode == mode and b.size == a.size
            ca, cb = np.asarray(a).astype(int), np.asarray(b).astype(int)
        assert np.array_equal(ca[..., -1], cb[..., -1])  # alpha untouched
        change = np.abs(cb[..., :channels] - ca[..., :channels])
        assert 0 < change.max() <= 8
    from torchvision.datasets import ImageFolder  # users' loader: the default one reads every protected file

    a, b = ImageFolder(str(src / "train")), ImageFolder(str(out / "train"))
    assert a.classes == b.classes and len(a) == len(b) == 12
    assert all(b[i][0].size == a[i][0].size and b[i][1] == a[i][1] for i in range(12))
    code, _, err = run_cli(["evaluate", "--protected", str(out), "--clean", str(src), "--epochs", "1",
                            "--batch-size", "4", "--out", str(tmp_path / "ev"), "--device", "cpu"], capsys)
    r = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert code in (0, 3), err
    assert r["data"]["image_shape"] == [channels, 20, 20]  # the model reads colour (or grey), not alpha
