"""The built-in benchmark datasets cut from images shipped inside installed wheels (mni-tissue, textures,
grey-photos)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.data import detect_format, load, save
from unlearnable.data.bench_sets import SLAB, TISSUES, _slab_split
from unlearnable.errors import UserError


def _counts(ds, split: str) -> list[int]:
    return torch.bincount(ds.labels[ds.indices(split)], minlength=ds.num_classes).tolist()


def test_textures_balanced_deterministic_and_seeded():
    ds = load("textures:n=100,test=40")
    assert detect_format("textures:n=100,test=40") == "builtin"
    assert ds.images.shape == (140, 3, 32, 32) and ds.images.dtype == torch.uint8 and ds.layout == "NHWC"
    assert _counts(ds, "train") == [10] * 10 and _counts(ds, "test") == [4] * 10
    assert ds.classes[ds.classes.index("retina")] == "retina" and ds.num_classes == 10
    assert list(ds.splits[:100]) == ["train"] * 100 and ds.ids[0] == "train/000000" and ds.ids[100] == "test/000000"
    assert torch.equal(ds.images, load("textures:n=100,test=40").images)
    assert not torch.equal(ds.images, load("textures:n=100,test=40,seed=1").images)
    # every crop has content (near-uniform crops are rejected)
    assert float(ds.images.float().flatten(2).std(2).mean(1).min()) >= 4.0


def test_textures_without_colour_keeps_the_crops_and_takes_the_colour_cues_away():
    from unlearnable.audit.cues import colour_cues
    from unlearnable.data.bench_sets import NORM_MEAN, NORM_STD

    base = load("textures:n=200,test=100")
    norm = load("textures:n=200,test=100,normalise=1")
    grey = load("textures:n=200,test=100,grey=1")
    both = load("textures:n=200,test=100,grey=1,normalise=1")
    assert norm.images.shape == base.images.shape and norm.layout == "NHWC"
    assert grey.images.shape == (300, 1, 32, 32) and grey.layout == "NHW" and both.layout == "NHW"
    assert norm.labels.tolist() == base.labels.tolist() and norm.ids == base.ids
    # every crop's channels: the same mean and spread (rounding and clipping to uint8 aside)
    x = norm.images.float().flatten(2)
    dm, ds_ = (x.mean(2) - NORM_MEAN).abs(), (x.std(2) - NORM_STD).abs()
    assert float(dm.median()) < 0.5 and float(ds_.median()) < 1.0 and float(dm.max()) < 12
    # grey is the luminance of the same crops
    lum = (base.images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert float((grey.images[:, 0].float() - lum).abs().max()) <= 0.5 + 1e-3
    # the point of it: a linear classifier on colour statistics names far fewer photographs
    acc = {name: colour_cues(ds, "test")["acc"] for name, ds in (("base", base), ("both", both))}
    assert acc["base"] > 0.5 and acc["both"] < acc["base"] - 0.25
    assert torch.equal(norm.images, load("textures:n=200,test=100,normalise=1").images)


def test_grey_photos_are_held_out_grey_crops_cut_like_the_textures():
    from unlearnable.data.bench_sets import GREY_PHOTOS, NORM_MEAN, PHOTOS

    ds = load("grey-photos:n=100,test=40")
    assert ds.images.shape == (140, 1, 32, 32) and ds.images.dtype == torch.uint8 and ds.layout == "NHW"
    assert _counts(ds, "train") == [10] * 10 and _counts(ds, "test") == [4] * 10
    assert ds.classes == tuple(p[2] for p in GREY_PHOTOS) and ds.meta["name"] == "grey-photos"
    assert torch.equal(ds.images, load("grey-photos:n=100,test=40").images)
    assert not torch.equal(ds.images, load("grey-photos:n=100,test=40,seed=1").images)
    assert float(ds.images.float().flatten(2).std(2).min()) >= 4.0  # no near-uniform crop
    # held out: no photograph the defaults were chosen on
    assert not {p[1] for p in GREY_PHOTOS} & {p[1] for p in PHOTOS}
    norm = load("grey-photos:n=100,test=40,normalise=1")
    assert norm.labels.tolist() == ds.labels.tolist()
    assert float((norm.images.float().flatten(1).mean(1) - NORM_MEAN).abs().median()) < 0.5


def test_mni_tissue_labels_follow_the_tissue_at_the_centre():
    ds = load("mni-tissue:n=200,test=80")
    assert ds.images.shape == (280, 1, 32, 32) and ds.layout == "NHW" and ds.classes == TISSUES
    assert _counts(ds, "train") == [50] * 4 and _counts(ds, "test") == [20] * 4
    centre = ds.images[:, 0, 15, 16].float()  # the labelled voxel, after turning anterior up
    mean = [float(centre[ds.labels == c].mean()) for c in range(4)]
    # T1 contrast: background (skull-stripped, near 0) < CSF < grey matter < white matter
    assert mean[0] < 20 < mean[1] < mean[2] < mean[3]
    # background patches still show brain (not trivially black)
    bg = ds.images[ds.labels == 0].float()
    assert float((bg > 0).float().mean()) > 0.2
    assert torch.equal(ds.images, load("mni-tissue:n=200,test=80").images)


def test_mni_tissue_normalised_keeps_the_patches_and_takes_their_brightness_away():
    from unlearnable.data.bench_sets import NORM_MEAN, NORM_STD

    base, norm = load("mni-tissue:n=200,test=80"), load("mni-tissue:n=200,test=80,normalise=1")
    assert norm.images.shape == base.images.shape and norm.labels.tolist() == base.labels.tolist()
    x = norm.images.float().flatten(1)
    assert float((x.mean(1) - NORM_MEAN).abs().median()) < 0.5 and float((x.std(1) - NORM_STD).abs().median()) < 1
    # brightness ranks within a patch are kept (the same patch, rescaled)
    a, b = base.images[0, 0].float().flatten(), norm.images[0, 0].float().flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.99
    # the patch mean no longer orders the tissues (it does without normalising: background < CSF < GM < WM)
    means = [float(x[norm.labels == c].mean()) for c in range(4)]
    assert max(means) - min(means) < 3


def test_mni_tissue_train_and_test_slabs_are_apart():
    train = [z for z in range(3 * SLAB) if _slab_split(z) == "train"]
    test = [z for z in range(3 * SLAB) if _slab_split(z) == "test"]
    assert train and test
    assert min(abs(a - b) for a in train for b in test) >= 3  # no neighbouring slice on the other side


@pytest.mark.parametrize("spec, match", [
    ("textures:n=abc", "not a whole number"),
    ("textures:foo=1", "bad option 'foo=1'"),
    ("mnist5k:n=10", "options: none"),
    ("mni-tissue:test=2", "at least 4"),
    ("mni-tissue:size=4", "size=4"),
    ("textures:grey=2", "grey=2; choose 0 or 1"),
    ("mni-tissue:grey=1", "bad option 'grey=1'"),
    ("mni-tissue:normalise=-1", "normalise=-1; choose 0 or 1"),
    ("grey-photos:grey=1", "bad option 'grey=1'"),
    ("grey-photos:size=65", "grey-photos: size=65"),
])
def test_bad_builtin_options(spec, match):
    with pytest.raises(UserError, match=match):
        load(spec)


def test_builtin_with_options_saves_as_npz(tmp_path):
    ds = load("textures:n=20,test=10")
    files = save(ds, tmp_path)
    assert [f.name for f in files] == ["textures.npz"]
    back = load(tmp_path / "textures.npz")
    assert np.array_equal(back.to_numpy(), ds.to_numpy()) and back.labels.tolist() == ds.labels.tolist()


def test_cli_protects_a_builtin_with_options_and_rejects_bad_ones(tmp_path, capsys):
    from helpers import run_cli

    code, _, err = run_cli(["protect", "textures:n=x", "-m", "random", "-o", str(tmp_path / "bad")], capsys)
    assert code == 2 and "textures:n=x: option n='x' is not a whole number" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "bad").exists()
    code, _, _ = run_cli(["protect", "textures:n=20,test=10", "-m", "random", "-o", str(tmp_path / "ok")], capsys)
    assert code == 0 and (tmp_path / "ok" / "textures.npz").is_file()
