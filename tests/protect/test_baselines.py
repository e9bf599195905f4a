"""LSP and OPS: model-free synthetic shortcuts."""

from __future__ import annotations

import pytest
import torch

from _efficacy import clean_acc, protected_acc, single_thread  # noqa: F401
from unlearnable.data import ImageSet
from unlearnable.protect import METHODS, Key
from unlearnable.protect.ops import changed_pixels


def _data(n: int = 24, c: int = 3, size: int = 16, classes: int = 4, value: int | None = None) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(40, 216, (n, c, size, size), generator=g, dtype=torch.uint8) if value is None else \
        torch.full((n, c, size, size), value, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageSet(img, labels, tuple(f"s{i}" for i in range(n)), ("train",) * n, tuple("abcd"[:classes]))


def _run(method: str, data: ImageSet, seed: int = 1, **params) -> torch.Tensor:
    algo = METHODS.get(method)(**params)
    return algo.apply(data, algo.fit(data, Key.from_seed(seed)))


def test_lsp_linf_classwise_patches():
    data = _data(value=128)  # no clipping: the perturbation is visible exactly
    out = _run("lsp", data)
    delta = out.int() - data.images.int()
    assert delta.abs().max() == 8  # 8/255 budget, reached
    for k in range(4):  # one pattern per class ...
        rows = delta[data.labels == k]
        assert (rows == rows[0]).all()
    assert not torch.equal(delta[0], delta[1])  # ... and different classes differ
    cell = delta[0, 0, :4, :4]  # default grid 4 x 4 on 16 px -> 4 px cells of one colour
    assert (cell == cell[0, 0]).all()
    assert not torch.equal(_run("lsp", data, seed=1), _run("lsp", data, seed=2))


def test_lsp_l2_budget_holds_after_quantisation():
    data = _data()
    eps = 0.5
    out = _run("lsp", data, eps=eps, norm="l2")
    norms = (out.float() - data.images.float()).div(255).flatten(1).norm(dim=1)
    assert norms.max() <= eps + 1e-6 and norms.min() > 0.3 * eps


def test_ops_changes_one_pixel_per_image_to_an_extreme():
    data = _data(classes=4)
    algo = METHODS.get("ops")()
    pert = algo.fit(data, Key.from_seed(3))
    out = algo.apply(data, pert)
    assert changed_pixels(data.images, out).max() <= 1
    assert len({tuple(p.tolist()) for p in pert.position}) == 4  # one distinct position per class
    n = torch.arange(len(data))
    px = out[n, :, pert.position[data.labels, 0], pert.position[data.labels, 1]]
    assert ((px == 0) | (px == 255)).all()
    assert algo.linf_budget() is None  # L0, not L-inf: documented


def test_ops_colour_is_the_extreme_far_from_the_class_mean():
    dark, bright = _data(c=1, value=10), _data(c=1, value=240)
    assert (METHODS.get("ops")().fit(dark, Key.from_seed(0)).colour == 255).all()
    assert (METHODS.get("ops")().fit(bright, Key.from_seed(0)).colour == 0).all()


@pytest.mark.slow  # ~30 s; tiles' efficacy test covers the synthetic-shortcut path by default
def test_lsp_lowers_victim_accuracy():
    base = clean_acc()
    acc = protected_acc("lsp", eps=16 / 255)
    assert base > 0.75 and acc < base - 0.15, (base, acc)


@pytest.mark.slow  # ~16 s; keeps the default suite under 10 min on the loaded 2-core machine
def test_ops_lowers_victim_accuracy():
    base = clean_acc()
    acc = protected_acc("ops")
    assert base > 0.75 and acc < base - 0.15, (base, acc)


@pytest.mark.parametrize("method", ["lsp", "ops"])
def test_bad_params(method):
    from unlearnable.errors import UserError

    with pytest.raises(UserError):
        METHODS.get(method)(**({"patch": "-1"} if method == "lsp" else {"eps": "1"}))
