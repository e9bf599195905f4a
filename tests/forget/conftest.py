"""Tiny fixtures for the 3D segmentation / unlearning tests (16³ synthetic phantoms, ResNet-10 of width 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearnable.data.phantoms import brain_phantoms
from unlearnable.data.subjects import SubjectSet

TINY = "brain-phantoms:n=6,size=16"
TRAIN_ARGS = ["--model", "resnet10", "--width", "4", "--patch", "16", "--epochs", "2", "--batch-size", "2",
              "--test-fraction", "0.34", "--device", "cpu"]


def exit_code(argv: list[str]) -> int:
    """Run the real CLI entry point; the exit code (0 when it returns normally)."""
    from unlearnable.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="session")
def tiny_subjects() -> SubjectSet:
    """Six synthetic 16³ subjects, one T1 channel, labels bg/CSF/GM/WM."""
    return brain_phantoms(n=6, size=16)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder trained for two epochs on TINY through the real CLI (4 train / 2 test subjects)."""
    out = tmp_path_factory.mktemp("seg") / "model"
    assert exit_code(["segment", "train", TINY, "--out", str(out), *TRAIN_ARGS]) == 0
    return out
