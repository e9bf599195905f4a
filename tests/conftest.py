"""Tiny fixtures shared by the test suite (tiny tensors, tiny files)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_images, write_folder, write_medmnist  # noqa: E402
from unlearnable.data import ImageSet  # noqa: E402

# One intra-op thread unless OMP_NUM_THREADS asks for more: on a shared 2-core machine, OpenMP threads spin against
# the other jobs (the 1,000-digit CUDA audit test took 70 s with 2 threads and 23 s with 1 under the same load).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"].split(",")[0] or 1)))


@pytest.fixture


def grey_set() -> ImageSet:
    x, y = make_images(16, 1, 16, 4)
    return ImageSet.from_numpy(x, y)


@pytest.fixture


def rgb_set() -> ImageSet:
    x, y = make_images(8, 3, 16, 4, seed=1)
    return ImageSet.from_numpy(x, y)


@pytest.fixture


def npz_path(tmp_path: Path) -> Path:
    return write_medmnist(tmp_path / "tinymnist.npz")


@pytest.fixture


def rgb_npz_path(tmp_path: Path) -> Path:
    return write_medmnist(tmp_path / "tinyrgb.npz", c=3, compressed=False)


@pytest.fixture


def folder_path(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "folder")
