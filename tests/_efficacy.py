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


@functools.lru_cache(maxsize=1)
def digits() -> tuple[ImageSet, ImageSet]:
    """(train subset of N_TRAIN random training digits, the 1,000 clean test digits).

    The subset keeps the source's order (mnist5k is sorted by class), as ``audit --limit`` does: methods must not
    depend on the data arriving shuffled."""
    ds = load("mnist5k")
    train = ds.split("train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:N_TRAIN].sort().values
    return train.subset(pick), ds.split("test")


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
    train, _ = digits()
    algo = METHODS.get(method)(**params)
    return victim_acc(algo.apply(train, algo.fit(train, Key.from_seed(7))))


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread while a test runs: on a shared 2-core box, OpenMP spinning against other jobs makes
    multi-threaded CPU training 10-40x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
