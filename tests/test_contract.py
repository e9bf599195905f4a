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
