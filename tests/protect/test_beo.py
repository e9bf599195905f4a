"""BEO: Bayes-error optimisation with a leave-one-out RBF kernel estimate in a learnt feature space."""

from __future__ import annotations

import functools

import pytest
import torch

from _efficacy import clean_acc, digits, single_thread, victim_acc  # noqa: F401
from unlearnable.data import ImageSet
from unlearnable.errors import UserError
from unlearnable.protect import METHODS, Key
from unlearnable.protect.beo import BayesErrorOptimisation, bayes_error, loo_posteriors

TINY = {"steps": 2, "pretrain_epochs": 1, "refresh_every": 1, "refresh_steps": 1, "batch_size": 8}


def _data(n: int = 16) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    return ImageSet(img, torch.arange(n) % 2, tuple(f"s{i}" for i in range(n)), ("train",) * n, ("a", "b"))


def _posteriors(z: torch.Tensor, y: torch.Tensor, h: float = 1.0, chunk: int = 4096) -> torch.Tensor:
    return loo_posteriors(z, torch.arange(len(z)), z, y, int(y.max()) + 1, h, chunk)


def test_estimator_separated_classes_have_zero_bayes_error():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    z = torch.randn(40, 3, generator=g) * 0.1 + y[:, None] * 10.0
    assert float(bayes_error(_posteriors(z, y))) < 1e-6


def test_estimator_identical_classes_have_chance_error():
    z = torch.zeros(40, 3)  # every point the same: the posterior is the label frequency among the others
    y = torch.arange(40) % 2
    assert float(bayes_error(_posteriors(z, y))) == pytest.approx(1 - 20 / 39, abs=1e-5)


def test_estimator_is_leave_one_out():
    z = torch.zeros(5, 2)
    y = torch.tensor([0, 1, 1, 1, 1])  # the lone class-0 point gets no vote from itself
    p = _posteriors(z, y)
    assert p[0, 0] == pytest.approx(0.0, abs=1e-6) and p[0, 1] == pytest.approx(1.0)


def test_estimator_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(37, 4, generator=g), torch.randint(0, 3, (37,), generator=g)
    torch.testing.assert_close(_posteriors(z, y, chunk=5), _posteriors(z, y, chunk=4096))


def test_beo_raises_the_estimated_bayes_error():
    data = _data(n=48)
    img = data.images.clone()
    img[:, :, :8] = (img[:, :, :8].int() // 2 + 64 + 40 * data.labels.view(-1, 1, 1, 1)).to(torch.uint8)
    data = data.with_images(img)  # class 1 is brighter at the top: separable, low Bayes error at the start
    algo = METHODS.get("beo")(steps=4, pretrain_epochs=3, refresh_every=10, batch_size=16, eps=16 / 255)
    algo.fit(data, Key.from_seed(1))
    assert algo.history[-1] > algo.history[0], algo.history


@pytest.mark.parametrize("norm,eps,bound", [("linf", 8 / 255, None), ("l2", 0.5, 0.5)])
def test_budget_and_determinism(norm, eps, bound):
    data = _data()
    algo = METHODS.get("beo")(norm=norm, eps=eps, **TINY)
    a = algo.apply(data, algo.fit(data, Key.from_seed(1)))
    assert torch.equal(a, algo.apply(data, algo.fit(data, Key.from_seed(1))))
    diff = (a.float() - data.images.float()) / 255
    if norm == "linf":
        assert diff.abs().max() <= 8 / 255 + 1e-6
    else:
        assert diff.flatten(1).norm(dim=1).max() <= bound + 1e-6


@pytest.mark.parametrize("bad", [{"norm": "l1"}, {"steps": "0"}, {"bandwidth": "-1"}, {"surrogate": "resnet"}])
def test_bad_params(bad):
    with pytest.raises(UserError):
        METHODS.get("beo")(**bad)


@functools.lru_cache(maxsize=2)
def _digits_at_32(steps: int) -> tuple[list[float], float]:
    """BEO at 32/255 on the efficacy digits: (Bayes-error history, victim accuracy). 8/255 and 16/255 do not
    protect MNIST digits (docs/methods.md). Measured vs 88.0% clean (digits in shuffled order): 38.7% with
    5 steps, 29.3% with the default 20."""
    train, _ = digits()
    algo = METHODS.get("beo")(eps=32 / 255, steps=steps)
    prot = algo.apply(train, algo.fit(train, Key.from_seed(7)))
    return algo.history, victim_acc(prot)


@pytest.mark.slow  # ~55 s under load
def test_beo_estimate_is_low_on_clean_features_and_rises_on_digits():
    history, _ = _digits_at_32(5)
    assert history[0] < 0.1, history  # a trained extractor separates clean digits (was 0.66 with 2 epochs)
    assert max(history) > history[0] + 0.3, history


@pytest.mark.slow  # ~40 s; BEO at its measured budget is in docs/methods.md
def test_beo_lowers_victim_accuracy_fast():
    base = clean_acc()
    _, acc = _digits_at_32(5)
    assert base > 0.75 and acc < base - 0.15, (base, acc)


@pytest.mark.slow
def test_beo_defaults_lower_victim_accuracy_at_32():
    base = clean_acc()
    history, acc = _digits_at_32(BayesErrorOptimisation.Params.steps)
    assert history[0] < 0.1 and history[-1] > history[0] + 0.3, history
    assert base > 0.75 and acc < base - 0.15, (base, acc)
