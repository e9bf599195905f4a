"""Which clean split victims are tested on: ``test``, or ``val`` for an image folder shipped as ``train/`` and
``val/`` (ImageNet-style). evaluate, protect --verify and audit all follow the one rule and say which they used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_images, run_cli
from unlearnable.audit.evaluate import held_out_split
from unlearnable.data import ImageSet
from unlearnable.errors import UserError


def _folder(root: Path, splits=("train", "val"), sizes=(16,)) -> Path:
    """Two classes of blobs; ``sizes`` cycles over the files (mixed sizes when it has several)."""
    x, y = make_images(48, 3, 16, 2)
    k = 0
    for split, per_class in zip(splits, (12, 6, 6)):
        for c, name in enumerate(("left", "right")):
            d = root / split / name
            d.mkdir(parents=True)
            for j in range(per_class):
                img = Image.fromarray(x[np.flatnonzero(y == c)[k % 24]])
                img.resize((sizes[j % len(sizes)],) * 2).save(d / f"{name}{j}.png")
                k += 1
    return root


def _with_splits(*splits: str) -> ImageSet:
    x, y = make_images(6, 1, 8, 2)
    base = ImageSet.from_numpy(x, y)
    names = tuple(splits[i % len(splits)] for i in range(6))
    return ImageSet(base.images, base.labels, tuple(f"{i}" for i in range(6)), names, ("a", "b"))


def test_test_split_first_then_val():
    assert held_out_split(_with_splits("train", "val", "test"), "--clean") == "test"
    assert held_out_split(_with_splits("train", "test"), "--clean") == "test"
    assert held_out_split(_with_splits("train", "val"), "--clean") == "val"
    with pytest.raises(UserError, match=r"--clean: no 'test' or 'val' split to test victims on \(present: train\)"):
        held_out_split(_with_splits("train"), "--clean")


def test_evaluate_and_verify_test_on_val_when_a_folder_has_no_test_split(tmp_path, capsys):
    src = _folder(tmp_path / "photos")
    prot = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(src), "-m", "tiles", "--eps", "8/255", "-o", str(prot), "--verify",
                            "--verify-epochs", "1"], capsys)
    v = json.loads((prot / "manifest.json").read_text())["verify"]
    assert code in (0, 3), err  # 3: the one-epoch clean twin did not learn (an "invalid" verdict), still written
    assert v["test_split"] == "val" and sum(map(sum, v["confusion"])) == 12  # the 12 val images
    assert "clean 'val' split" in err
    out = tmp_path / "audit"
    code, _, err = run_cli(["evaluate", "--protected", str(prot), "--clean", str(src), "--epochs", "1",
                            "--batch-size", "8", "--out", str(out), "--device", "cpu"], capsys)
    res = json.loads((out / "results.json").read_text())
    assert code in (0, 3), err
    assert res["data"]["test_split"] == "val" and res["data"]["test"] == 12
    assert "clean 'val' split (--clean has no 'test' split)" in err


def test_a_folder_with_nothing_held_out_is_one_line_and_writes_nothing(tmp_path, capsys):
    src = _folder(tmp_path / "photos", splits=("train",))
    prot = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(src), "-m", "tiles", "-o", str(prot), "--verify"], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "no 'test' or 'val' split" in err
    assert not prot.exists()
    code, _, err = run_cli(["audit", str(src), "--methods", "random", "--epochs", "1", "-o", str(tmp_path / "a")],
                           capsys)
    assert code == 2 and "no 'test' or 'val' split" in err and "present: train" in err


def test_audit_resizes_a_folder_of_mixed_sizes_and_tests_on_val(tmp_path, capsys):
    src = _folder(tmp_path / "photos", sizes=(16, 20, 24))
    code, _, err = run_cli(["audit", str(src), "--methods", "random", "--epochs", "1", "--batch-size", "8",
                            "-o", str(tmp_path / "a")], capsys)
    assert code == 2 and "pass --size N" in err  # the option the message names exists:
    code, _, err = run_cli(["audit", str(src), "--methods", "random", "--epochs", "1", "--batch-size", "8",
                            "--size", "16", "-o", str(tmp_path / "a")], capsys)
    assert code in (0, 3), err
    assert "clean 'val' split" in err
    rows = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert {r["method"] for r in (rows["rows"] if isinstance(rows, dict) else rows)} >= {"clean", "random"}


def test_verify_trains_on_what_the_files_will_hold(tmp_path, capsys):
    """With a lossy --image-format the victim sees the protected images after the codec, as a reader will: JPEG
    erases much of an 8/255 pattern, so the verified PSNR moves and the check does not flatter the output."""
    src = _folder(tmp_path / "photos", splits=("train", "test"))
    psnr = {}
    for fmt in ("png", "jpeg:30"):
        out = tmp_path / fmt.replace(":", "")
        code, _, err = run_cli(["protect", str(src), "-m", "tiles", "--eps", "8/255", "-o", str(out), "--verify",
                                "--verify-epochs", "1", "--image-format", fmt], capsys)
        assert code in (0, 3), err
        psnr[fmt] = json.loads((out / "manifest.json").read_text())["verify"]["psnr"]
    assert 29.5 < psnr["png"] < 33 and psnr["jpeg:30"] < psnr["png"] - 1  # the codec's own loss is counted


def test_as_written_is_identity_for_lossless_files_and_the_codec_for_lossy_ones(tmp_path):
    import torch

    from unlearnable.data.formats.images import ImageFormat, decode, encode
    from unlearnable.data.io import open_catalog

    cat = open_catalog(str(_folder(tmp_path / "photos")))
    idx = cat.indices("train")[:3]
    clean = cat.imageset(idx).images
    prot = (clean.int() + 8).clamp(0, 255).to(torch.uint8)
    assert torch.equal(cat.as_written(idx, prot, ImageFormat("png")), prot)
    got = cat.as_written(idx, prot, ImageFormat("jpeg", 30))
    want = decode(encode(prot[0].numpy(), "JPEG", 30), False, "x")
    assert torch.equal(got[0], torch.tensor(want)) and not torch.equal(got, prot)
