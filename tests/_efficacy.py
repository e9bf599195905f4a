"""Shared victim runs for the efficacy tests: a 1,000-image subset of mnist5k, a smallcnn victim, 4 epochs.

The clean baseline is computed once per test process and reused by every efficacy test.
"""

from __future__ import annotations

import functools

import pytest
import torch

from unlearnable.data import ImageSet, load
from unlearnable.protect import METHODS, Key
from unlearnable.train.loop import Recipe, train_classifier

VICTIM = Recipe(model="smallcnn", epochs=4, batch_size=32, lr=0.05, seed=0)
N_TRAIN = 1000


@functools.lru_cache(maxsize=4)
def random_subset(source: str, n: int) -> tuple[ImageSet, ImageSet]:
    """(``n`` random training images of built-in ``source`` (seed 0), its clean test split).

    The subset keeps the source's order (mnist5k is sorted by class), as ``audit --limit`` does: methods must not
    depend on the data arriving shuffled."""
    ds = load(source)
    train = ds.split("train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return train.subset(pick), ds.split("test")


def digits() -> tuple[ImageSet, ImageSet]:
    """(train subset of N_TRAIN random training digits, the 1,000 clean test digits)."""
    return random_subset("mnist5k", N_TRAIN)


def protect(train: ImageSet, method: str, key: int = 7, **params) -> torch.Tensor:
    """``train``'s images protected by ``method`` (``params``) with key ``key``."""
    algo = METHODS.get(method)(**params)
    return algo.apply(train, algo.fit(train, Key.from_seed(key)))


def smallcnn_acc(train: ImageSet, test: ImageSet, images: torch.Tensor, *, epochs: int, aug: str,
                  batch_size: int = 64) -> float:
    """Final-epoch clean-test accuracy of a small CNN (lr 0.05, seed 0) trained ``epochs`` epochs on ``images``
    with ``train``'s labels and the augmentation ``aug`` (a defence spec: ``aug:4``, ``aug:2:flip=false``)."""
    from unlearnable.train.defenses import parse_defense
    recipe = Recipe(model="smallcnn", epochs=epochs, batch_size=batch_size, lr=0.05, seed=0)
    _, h = train_classifier(images, train.labels, train.num_classes, recipe,
                            eval_sets={"test": (test.images, test.labels)},
                            hooks=[parse_defense(aug).hook(train.num_classes)])
    return h.epochs[-1]["test_acc"]


def victim_acc(images: torch.Tensor) -> float:
    """Clean test accuracy of the victim trained on ``images`` (labels of the subset)."""
    train, test = digits()
    _, hist = train_classifier(images, train.labels, train.num_classes, VICTIM,
                               eval_sets={"test": (test.images, test.labels)})
    return hist.epochs[-1]["test_acc"]


@functools.lru_cache(maxsize=1)
def clean_acc() -> float:
    return victim_acc(digits()[0].images)


def protected_acc(method: str, **params) -> float:
    return victim_acc(protect(digits()[0], method, **params))


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread while a test runs: on a shared 2-core box, OpenMP spinning against other jobs makes
    multi-threaded CPU training 10-40x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
