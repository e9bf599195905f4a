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


def test_fingerprint_names_the_data_and_settings_a_checkpoint_belongs_to(monkeypatch) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 1, 6, 6), dtype=torch.uint8, generator=g)
    labels = torch.arange(10) % 3
    here = CK.fingerprint({"eps": 8, "method": "tiles"}, images, labels)
    assert len(here) == 16 and int(here, 16) >= 0
    assert CK.fingerprint({"method": "tiles", "eps": 8}, images.clone(), labels.clone()) == here  # key order, copies
    moved = images.clone()
    moved[7, 0, 3, 2] ^= 1  # one grey level of one pixel
    relabelled = labels.clone()
    relabelled[4] = (relabelled[4] + 1) % 3
    others = [CK.fingerprint({"eps": 8, "method": "tiles"}, moved, labels),
              CK.fingerprint({"eps": 8, "method": "tiles"}, images, relabelled),
              CK.fingerprint({"eps": 4, "method": "tiles"}, images, labels),
              CK.fingerprint({"eps": 8, "method": "tiles"}, images, labels.to(torch.int32)),  # dtype counts
              CK.fingerprint({"eps": 8, "method": "tiles"}, images.reshape(10, 1, 3, 12), labels),  # shape counts
              CK.fingerprint({"eps": 8, "method": "tiles"}, labels, images)]  # so does which tensor is which
    assert len({here, *others}) == len(others) + 1
    # rows: only the rows named count, in chunks or not, as if those rows were passed alone
    rows = torch.tensor([0, 2, 5, 9])
    alone = CK.fingerprint("s", images[rows], labels[rows])
    assert CK.fingerprint("s", images, labels, rows=rows) == alone
    elsewhere = images.clone()
    elsewhere[1] = 0  # a row outside ``rows`` (e.g. the test split)
    assert CK.fingerprint("s", elsewhere, labels, rows=rows) == alone
    monkeypatch.setattr(CK, "FINGERPRINT_CHUNK", 3)  # several chunks hash as one
    assert CK.fingerprint("s", images, labels, rows=rows) == alone
    assert CK.fingerprint({"eps": 8, "method": "tiles"}, images, labels) == here
    assert CK.fingerprint("s", images[:, :, ::2]) == CK.fingerprint("s", images[:, :, ::2].contiguous())  # views
