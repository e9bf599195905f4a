"""One contract, every registered method: shape, dtype, budget after quantisation, determinism by key, purity."""

from __future__ import annotations

import pytest
import torch

from unlearnable.protect import METHODS, Key, protect


def _params(name: str) -> dict:
    return dict(getattr(METHODS.get(name), "test_params", {}))


@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("fixture", ["grey_set", "rgb_set"])
def test_method_contract(name, fixture, request):
    ds = request.getfixturevalue(fixture)
    before_images, before_labels = ds.images.clone(), ds.labels.clone()
    out1 = protect(ds, name, key=Key.from_seed(1), **_params(name))
    out2 = protect(ds, name, key=Key.from_seed(1), **_params(name))
    # inputs untouched
    assert torch.equal(ds.images, before_images) and torch.equal(ds.labels, before_labels)
    # shape, dtype, metadata
    assert out1.images.shape == ds.images.shape and out1.images.dtype == torch.uint8
    assert out1.ids == ds.ids and torch.equal(out1.labels, ds.labels)
    # same key + same data => the same bytes
    assert torch.equal(out1.images, out2.images)
    # it does something
    assert not torch.equal(out1.images, ds.images)
    # the budget holds after quantisation
    algo = METHODS.get(name)(**_params(name))
    eps = algo.linf_budget()
    if eps is not None:
        diff = (out1.images.int() - ds.images.int()).abs().max().item()
        assert diff <= int(eps * 255 + 1e-6), f"{name}: {diff}/255 exceeds eps {eps * 255:.2f}/255"


@pytest.mark.parametrize("name", METHODS.names())
def test_method_depends_on_the_key(name, rgb_set):
    a = protect(rgb_set, name, key=Key.from_seed(1), **_params(name))
    b = protect(rgb_set, name, key=Key.from_seed(2), **_params(name))
    assert not torch.equal(a.images, b.images)


@pytest.mark.parametrize("name", METHODS.names())
def test_only_the_requested_split_is_protected(name, grey_set):
    from unlearnable.data import ImageSet

    ds = ImageSet.from_numpy(grey_set.to_numpy(), grey_set.labels.numpy(),
                             split=["train"] * 12 + ["test"] * 4)
    out = protect(ds, name, key=Key.from_seed(1), **_params(name))
    test = ds.indices("test")
    assert torch.equal(out.images[test], ds.images[test])


def _mixed_folder(root):
    """Two classes, train and test, images of three different sizes (as real photo folders are)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(16, 16), (12, 20), (24, 18)]
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for j in range(6 if split == "train" else 2):
                h, w = sizes[j % 3]
                img = rng.integers(40, 216, (h, w, 3), dtype=np.uint8)
                img[: h // 2] += np.uint8(30 if c == "a" else 0)  # a learnable class cue
                Image.fromarray(img).save(root / split / c / f"{c}{j}.png")
    return root


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract_on_mixed_sizes_at_native_size(name, tmp_path):
    """Through the streamed protect job: every method handles images of different sizes, writes each at its own
    size, keeps its L-inf budget there, is deterministic by key, and leaves the test split byte for byte."""
    import numpy as np
    from PIL import Image

    from unlearnable.protect.run import protect_source

    src = _mixed_folder(tmp_path / "src")
    params = {k: str(v) for k, v in _params(name).items()}
    kwargs = dict(key_path=tmp_path / "k.key", params=params, quiet=True, work_size=16)
    man = protect_source(str(src), name, tmp_path / "o1", **kwargs)
    man2 = protect_source(str(src), name, tmp_path / "o2", **kwargs)
    assert man["output"]["sha256"] == man2["output"]["sha256"]  # same key + same data => same bytes
    assert man["images"]["fit_size"] == [16, 16] and man["images"]["size"] == "native"
    eps = METHODS.get(name)(**_params(name)).linf_budget()
    changed = 0
    for f in sorted(src.rglob("*.png")):
        rel = f.relative_to(src)
        a = np.asarray(Image.open(f)).astype(int)
        b = np.asarray(Image.open(tmp_path / "o1" / rel)).astype(int)
        assert a.shape == b.shape, rel  # native size kept
        if rel.parts[0] == "test":
            assert (tmp_path / "o1" / rel).read_bytes() == f.read_bytes(), rel
        else:
            changed += not np.array_equal(a, b)
            if eps is not None:
                assert np.abs(a - b).max() <= int(eps * 255 + 1e-6), rel
    assert changed > 0


def test_the_default_working_size_is_the_median_short_side_at_most_224(tmp_path):
    """Images of differing sizes are fitted at their median short side, capped at 224: photographs of a few hundred
    pixels at 224 as before, small crops at about their own size instead of blown up to 224."""
    from unlearnable.protect.native import WORK_SIZE, default_work_size, working_size
    from unlearnable.protect.run import protect_source

    assert WORK_SIZE == 224
    assert default_work_size([(500, 375), (333, 500), (240, 320)]) == 224  # Pets-sized photographs: unchanged
    assert default_work_size([(60, 90), (120, 100), (200, 210)]) == 100  # the median of 60, 100, 200
    assert default_work_size([(16, 16), (16, 20), (24, 20), (20, 24)]) == 20  # upper median of 16, 16, 20, 20
    assert working_size([(16, 16), (24, 20)], None, 12) == (12, 12)  # --work-size still decides
    assert working_size([(16, 16), (24, 20)], 8) == (8, 8) and working_size([(9, 9)] * 3, None) == (9, 9)
    src = _mixed_folder(tmp_path / "src")
    man = protect_source(str(src), "tiles", tmp_path / "o", key_path=tmp_path / "k.key", quiet=True)
    from unlearnable.data.io import open_catalog
    cat = open_catalog(str(src))
    train = [cat.sizes[i] for i in range(len(cat)) if cat.splits[i] == "train"]
    assert man["images"]["fit_size"] == [default_work_size(train)] * 2 and max(man["images"]["fit_size"]) < 30
