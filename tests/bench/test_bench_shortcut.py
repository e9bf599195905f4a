"""bench/shortcut.py: the probe sets carry the next class's tile within the budget, and a victim that can only learn
the tiles follows them on the probe."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import shortcut as S  # noqa: E402
from unlearnable.data import ImageSet  # noqa: E402
from unlearnable.protect import METHODS, Key  # noqa: E402


def _flat(n: int, k: int, seed: int) -> tuple[ImageSet, torch.Tensor, torch.Tensor]:
    """Images of one random grey level each: nothing in them names the class."""
    g = torch.Generator().manual_seed(seed)
    im = (torch.randint(60, 200, (n, 1, 1, 1), generator=g).expand(n, 1, 16, 16) + 0).to(torch.uint8).contiguous()
    lab = torch.arange(n) % k
    return ImageSet(im, lab, tuple(f"{i:06d}" for i in range(n)), ("train",) * n, tuple("abcd"[:k])), im, lab


def test_probe_sets_carry_the_next_classes_tile_within_the_budget():
    tr, te_im, te_lab = _flat(40, 4, 0)
    algo = METHODS.get("tiles")()
    pert = algo.fit(tr, Key.from_seed(3))
    sets = S.probe_sets(pert.tiles, pert.seed, algo.params.eps, te_im, te_lab)
    assert torch.equal(sets["test"][0], te_im)
    swap, nxt = sets["swap"]
    assert torch.equal(nxt, (te_lab + 1) % 4)
    d = swap.to(torch.int16) - te_im.to(torch.int16)
    assert int(d.abs().max()) == 8 and d.abs().float().mean() > 7  # every pixel spends the budget (no clipping here)
    # the change is the next class's tile, repeated: period 4 in both directions
    assert torch.equal(d[:, :, :, :4], d[:, :, :, 4:8]) and torch.equal(d[:, :, :4], d[:, :, 4:8])
    tile, _ = sets["tile"]
    assert torch.equal(tile.to(torch.int16) - 128, d)


def test_a_victim_that_can_only_learn_the_tiles_follows_them():
    tr, _, _ = _flat(512, 4, 1)
    _, te_im, te_lab = _flat(64, 4, 2)
    S.E.VICTIMS["probe-test"] = {"model": "smallcnn", "epochs": 12, "batch_size": 32, "lr": 0.05}
    try:
        row = S.run_one("flat", "probe-test", "tiles", 5, (tr, te_im, te_lab))
    finally:
        del S.E.VICTIMS["probe-test"]
    assert row["epochs"] == 12 and len(row["swap"]) == 12
    assert row["test"][-1] < 0.5  # clean images carry no class
    assert row["swap"][-1] > 0.9 and row["tile"][-1] > 0.9  # the tiles are its rule


def test_pool_variants_change_only_the_pooling():
    from unlearnable.models import MODELS
    S.register_variants()
    try:
        _check_variants()
    finally:  # the models registry is the process's: leave it as it was (the catalogue lists every model)
        S.unregister_variants()
    assert not set(S.POOL_VARIANTS) & set(MODELS) and not set(S.POOL_VARIANTS) & set(S.E.VICTIMS)


def _check_variants():
    from torch import nn

    from unlearnable.models import MODELS, build_model
    S.register_variants()  # idempotent
    assert set(S.POOL_VARIANTS) <= set(MODELS) and set(S.POOL_VARIANTS) <= set(S.E.VICTIMS)

    def kinds(name: str, size: int = 32) -> list[str]:
        return [type(m).__name__ for m in build_model(name, 3, 10, size).modules()
                if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.Conv2d))]

    base, mp = kinds("resnet18-narrow"), kinds("resnet18-narrow+maxpool")
    assert "MaxPool2d" not in base and mp.count("MaxPool2d") == 1 and [k for k in mp if k != "MaxPool2d"] == base
    small, avg = kinds("smallcnn"), kinds("smallcnn+avgpool")
    assert small.count("MaxPool2d") == 2 and avg == ["AvgPool2d" if k == "MaxPool2d" else k for k in small]
    stem = build_model("resnet18-narrow+imagenet-stem", 3, 10, 32)
    first = next(m for m in stem.modules() if isinstance(m, nn.Conv2d))
    assert first.kernel_size == (7, 7) and first.stride == (2, 2)
    assert stem(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_flat_screen_data_names_no_class_by_its_pixels():
    tr, te_im, te_lab = S.flat_data(n=200, test=50)
    assert tr.images.shape == (200, 3, 32, 32) and te_im.shape == (50, 3, 32, 32) and tr.num_classes == 10
    flat = tr.images.flatten(2)
    assert torch.equal(flat.amin(2), flat.amax(2))  # one level per channel and image
    assert 40 <= int(tr.images.min()) and int(tr.images.max()) <= 215
    assert torch.equal(tr.labels, torch.arange(200) % 10) and not torch.equal(te_im, tr.images[:50])
