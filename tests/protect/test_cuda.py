from __future__ import annotations

import pytest
import torch

from unlearnable.errors import UserError
from unlearnable.protect import Key, protect
from unlearnable.protect.cuda import ClasswiseConvolution, convolve_per_image


@pytest.mark.parametrize("fixture", ["grey_set", "rgb_set"])
def test_batched_cuda_matches_the_per_image_algorithm(fixture, request):
    ds = request.getfixturevalue(fixture)
    algo = ClasswiseConvolution(kernel=3, blur=0.3)
    filt = algo.fit(ds, Key.from_seed(0))
    got = algo.apply(ds, filt)
    want = convolve_per_image(ds.images, ds.labels, filt.weight)
    assert (got.int() - want.int()).abs().max() <= 1  # float summation order only


def test_filters_follow_the_paper(rgb_set):
    algo = ClasswiseConvolution(kernel=5, blur=0.3)
    w = algo.fit(rgb_set, Key.from_seed(0)).weight
    assert w.shape == (rgb_set.num_classes, 3, 1, 5, 5)
    assert ((w == 1.0).flatten(1).sum(1) == 3).all()  # one tap = 1 per class, same for all channels
    others = w[w != 1.0]
    assert others.min() >= 0 and others.max() <= 0.3
    assert torch.equal(w[:, 0], w[:, 1])


def test_each_class_gets_its_own_filter(grey_set):
    w = ClasswiseConvolution().fit(grey_set, Key.from_seed(0)).weight
    assert len({tuple(x.flatten().tolist()) for x in w}) == grey_set.num_classes


def test_bad_params_are_one_line_errors(grey_set):
    with pytest.raises(UserError, match="kernel=4: must be a positive odd number"):
        protect(grey_set, "cuda", key=0, kernel=4)
    with pytest.raises(UserError, match="has no parameter 'blurr'.*did you mean 'blur'"):
        protect(grey_set, "cuda", key=0, blurr=0.1)
    with pytest.raises(UserError, match="did you mean 'cuda'"):
        protect(grey_set, "cuba", key=0)


def test_budgeted_cuda_keeps_the_linf_ball_and_the_direction(rgb_set):
    from unlearnable.protect import METHODS, Key

    free = METHODS.get("cuda")()
    capped = METHODS.get("cuda")(eps=8 / 255)
    f = free.fit(rgb_set, Key.from_seed(1))
    a, b = free.apply(rgb_set, f), capped.apply(rgb_set, f)
    d_free = a.int() - rgb_set.images.int()
    d_cap = b.int() - rgb_set.images.int()
    assert d_free.abs().max() > 8 and d_cap.abs().max() <= 8
    assert torch.equal(d_cap, d_free.clamp(-8, 8))  # the same change, clipped to the budget
    assert capped.linf_budget() == 8 / 255 and free.linf_budget() is None
