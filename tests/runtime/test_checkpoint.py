"""The one checkpoint format: atomic writes, damaged files refused by name, RNG state round trips."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnable.errors import UserError
from unlearnable.runtime import checkpoint as CK


def _state() -> dict:
    return {"model": {"w": torch.arange(1000, dtype=torch.float32)}, "epoch": 3, "history": [0.5, 0.25]}


def test_round_trip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "last.pt"
    assert CK.load(path) is None
    CK.save(path, _state())
    back = CK.load(path)
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], _state()["model"]["w"])
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "foreign"])
def test_damaged_checkpoint_is_refused_by_name(tmp_path: Path, damage: str, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    CK.save(path, _state())
    data = bytearray(path.read_bytes())
    if damage == "truncate":  # what a crash in the middle of a plain torch.save leaves behind
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "header":
        data = data[:20]
    else:  # a plain torch.save file from an older version
        torch.save(_state(), path)
        data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data))
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(1))
    with pytest.raises(UserError, match=str(path).replace("\\", "\\\\") + ": damaged checkpoint") as e:
        CK.load(path)
    assert "\n" not in str(e.value) and not unpickled  # one line, and nothing of the file was unpickled


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    CK.save(path, _state())
    before = path.read_bytes()

    def crash(fd: int) -> None:
        raise KeyboardInterrupt  # killed after writing, before the rename

    monkeypatch.setattr(CK.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        CK.save(path, {"epoch": 4})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    monkeypatch.undo()
    assert CK.load(path)["epoch"] == 3


def test_rng_state_round_trip() -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    saved = CK.rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    CK.restore_rng(saved)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]
