"""bench/resize.py: every protection stays within the budget, and a run trains at the resolution it names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from unlearnable.data import load

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import resize as R  # noqa: E402


@pytest.mark.parametrize("spec", ["clean", "tiles", "tiles-period:4", "tiles-cell:2", "fine+coarse:2"])
def test_specs_stay_within_the_budget(spec):
    train = load("textures:n=20,test=10,size=16").split("train")
    x = R.protected(train, spec, 7)
    d = (x.int() - train.images.int()).abs()
    assert x.dtype == torch.uint8 and x.shape == train.images.shape and int(d.max()) <= 8
    assert (int(d.max()) == 0) == (spec == "clean")
    if spec == "tiles-cell:2":  # blocky: every 2x2 cell at the phase's grid carries one sign per channel
        codes = R.tile_codes(train, R.Key.from_seed(7), 2)
        assert torch.equal(codes.tiles[..., ::2, ::2].repeat_interleave(2, -1).repeat_interleave(2, -2), codes.tiles)
    if spec in ("tiles", "tiles-period:4"):  # the signed change repeats every period along a row (2 px / 4 px),
        # wherever neither pixel was clipped at 0 or 255, and not at the other period
        delta = x.int() - train.images.int()
        for p, same in ((4, True), (2, spec == "tiles")):
            a, b = delta[..., :, p:], delta[..., :, :-p]
            ok = (a.abs() == 8) & (b.abs() == 8)
            assert bool((a[ok] == b[ok]).all()) == same


def test_a_run_trains_at_the_size_it_names():
    row = R.run("mni-tissue", 16, 8, "tiles", 7, "down", n=40, test_n=20)
    assert row["victim_size"] == 8 and row["at"] == "down" and 0 <= row["test"] <= 1 and row["chance"] == 0.25
    with pytest.raises(SystemExit, match="unknown"):
        R.protected(load("textures:n=20,test=10,size=16").split("train"), "blur", 7)


def test_sizes_above_what_a_dataset_is_cut_at_are_enlarged_and_the_victim_is_named(monkeypatch):
    R._data.cache_clear()
    monkeypatch.setitem(R.BUILT_MAX, "textures", 16)  # cut at 16 px, asked for 24: built at 16, then enlarged
    ds = R._data("textures", 20, 10, 24)
    small = load("textures:n=20,test=10,size=16")
    assert tuple(ds.images.shape[1:]) == (3, 24, 24) and torch.equal(ds.labels, small.labels)
    seen = {}

    def fake_train(images, labels, k, recipe, **kw):  # record the victim instead of training it
        seen.update(model=recipe.model, epochs=recipe.epochs, size=tuple(images.shape[-2:]))
        h = type("H", (), {"epochs": [{"test_acc": 0.5, "train_acc": 1.0}]})()
        return None, h

    monkeypatch.setattr(R, "train_classifier", fake_train)
    row = R.run("textures", 24, 24, "tiles", 7, "native", n=20, test_n=10, model="resnet18-narrow")
    assert seen == {"model": "resnet18-narrow", "epochs": 40, "size": (24, 24)} and row["model"] == "resnet18-narrow"
    R._data.cache_clear()
