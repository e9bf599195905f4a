"""UC with ``shape=periodic``: parameter checks, the periodic property, determinism per key, cluster purity, and
(slow) efficacy against a random-noise control at the same budget."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli
from helpers import write_train_test_npz as npz
from unlearnable.data import ImageSet, load
from unlearnable.errors import UserError
from unlearnable.protect import METHODS, add_within_linf
from unlearnable.protect.keys import Key, load_key
from unlearnable.protect.sealed import open_state
from unlearnable.protect.tiles import phases, tile_at_phases, tile_noise
from unlearnable.protect.uc import cluster_purity

TINY = {**METHODS.get("uc").tiny_params, "shape": "periodic"}


def images(n: int = 16, c: int = 3, size: int = 16, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    arr = rng.integers(20, 236, (n, size, size, c)).astype(np.uint8)  # away from 0/255: no clipping
    return ImageSet.from_numpy(arr[..., 0] if c == 1 else arr, np.arange(n) % 2)


@pytest.mark.parametrize("params, needle", [
    ({"shape": "peroidic"}, "did you mean 'periodic'"),
    ({"shape": "periodic", "period": 1}, "--param period=1"),
    ({"shape": "periodic", "period": 17}, "--param period=17"),
    ({"shape": "periodic", "norm": "l2", "eps": 1.0}, "--param norm=l2"),
])
def test_bad_parameters_are_one_line_user_errors(params: dict, needle: str) -> None:
    with pytest.raises(UserError) as e:
        METHODS.get("uc")(**params)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_tile_at_phases_matches_tile_noise_and_is_differentiable() -> None:
    t = torch.randn(3, 2, 4, 4, requires_grad=True)
    ids = ("a", "b", "c")
    got = tile_at_phases(t, phases(5, ids, 4), (10, 9))
    assert torch.equal(got, tile_noise(t.detach(), torch.arange(3), ids, 5, (10, 9)))
    got.sum().backward()
    assert t.grad is not None and float(t.grad.abs().sum()) > 0


@pytest.mark.parametrize("channels, period", [(3, 2), (1, 4), (3, 3)])
def test_noise_equals_its_own_shift_by_the_period(channels: int, period: int) -> None:
    data = images(c=channels)
    algo = METHODS.get("uc")(**TINY, **({"period": period} if period == 3 else {}))
    pert = algo.fit(data, Key.from_seed(3))
    assert pert.tiles is not None and tuple(pert.tiles.shape) == (2, channels, period, period)
    noise = algo.apply(data, pert).float() - data.images.float()  # no clipping: pixels are in 20..235
    assert float(noise.abs().max()) > 0
    assert torch.equal(noise[..., period:, :], noise[..., :-period, :])
    assert torch.equal(noise[..., :, period:], noise[..., :, :-period])
    # each sample's noise is its cluster's tile at the sample's own phase (not one fixed image per cluster)
    ph = phases(pert.phase_seed, data.ids, period)
    assert len({tuple(p) for p in ph.tolist()}) > 1
    q = torch.round(tile_at_phases(pert.tiles[pert.assign], ph, data.size) * 255)
    assert float((noise - q).abs().max()) <= 1.0  # up to uint8 rounding


def test_periodic_fit_is_deterministic_per_key_and_changes_with_it() -> None:
    data = images()
    algo = METHODS.get("uc")(**TINY)
    a, b = (algo.apply(data, algo.fit(data, Key.from_seed(1))) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, algo.apply(data, algo.fit(data, Key.from_seed(2))))


def test_report_has_purity_and_smooth_shape_is_unchanged() -> None:
    data = images()
    smooth = METHODS.get("uc")(**{**TINY, "shape": "smooth"})
    pert = smooth.fit(data, Key.from_seed(1))
    assert pert.tiles is None and pert.report["shape"] == "smooth" and pert.report["period"] is None
    assert 0.5 <= pert.report["cluster_purity"] <= 1.0  # two balanced classes: at least the majority share
    assert METHODS.get("uc")().params.shape in ("smooth", "periodic")


def test_cluster_purity() -> None:
    assign = torch.tensor([0, 0, 0, 1, 1, 1])
    assert cluster_purity(assign, torch.tensor([2, 2, 2, 0, 0, 0])) == 1.0
    assert cluster_purity(assign, torch.tensor([0, 0, 1, 1, 1, 0])) == round(4 / 6, 4)


def test_like_protects_new_images_with_the_stored_tiles(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """``protect --like``: seen images get the same bytes, new ids their cluster's tile at their own phase."""
    src, new_src = npz(tmp_path / "fit.npz", n=24), npz(tmp_path / "new.npz", n=10, seed=7)
    flags = ["-m", "uc", "--clusters", "3", "--epochs", "1", "--batch-size", "8", "-p", "ssl_epochs=0",
             "-p", "width=8", "-p", "gen_width=8", "-p", "shape=periodic"]
    for args in ([src, *flags, "-o", tmp_path / "out"],
                 [src, "--like", tmp_path / "out", "--key", tmp_path / "out.key", "-o", tmp_path / "again"],
                 [new_src, "--like", tmp_path / "out", "--key", tmp_path / "out.key", "-o", tmp_path / "new"]):
        code, _, err = run_cli(["protect", *map(str, args)], capsys)
        assert code == 0, err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["fit"]["shape"] == "periodic" and 0 < m["fit"]["cluster_purity"] <= 1
    assert (tmp_path / "out" / "fit.npz").read_bytes() == (tmp_path / "again" / "fit.npz").read_bytes()
    _, pert, _ = open_state(tmp_path / "out", load_key(tmp_path / "out.key"))
    assert pert.tiles is not None and pert.phase_seed is not None
    with open(tmp_path / "new" / "clusters.csv") as f:
        got = {r["id"]: int(r["cluster"]) for r in csv.DictReader(f)}
    new = load(new_src).split("train")
    noise = tile_at_phases(pert.tiles[torch.tensor([got[i] for i in new.ids])],
                           phases(pert.phase_seed, new.ids, int(pert.tiles.shape[-1])), new.size)
    want = add_within_linf(new.images, noise, 16 / 255)
    assert np.array_equal(load(next((tmp_path / "new").glob("*.npz"))).split("train").images.numpy(), want.numpy())


@pytest.mark.slow
def test_periodic_uc_protects_digits_against_a_random_control(tmp_path: Path) -> None:
    """UC's threat model: no labels for the protected images, an off-the-shelf feature extractor (here a smallcnn
    trained on 3,000 OTHER digits). The victim trains with random crops; the control is random noise at the same
    budget. ~4 minutes on 2 busy cores (bench: 35 % vs 92 %, docs/methods.md)."""
    from unlearnable.data import load
    from unlearnable.protect import protect
    from unlearnable.train.defenses import parse_defense
    from unlearnable.train.loop import Recipe, train_classifier

    torch.set_num_threads(2)
    ds = load("mnist5k")
    tr, te = ds.split("train"), ds.split("test")
    perm = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))
    mine, public = tr.subset(perm[:1000].sort().values), perm[1000:]
    surrogate, _ = train_classifier(tr.images[public], tr.labels[public], 10,
                                    Recipe(model="smallcnn", epochs=3, batch_size=64, lr=0.05))
    torch.save(surrogate.state_dict(), tmp_path / "surrogate.pt")
    uc = {"shape": "periodic", "surrogate_weights": str(tmp_path / "surrogate.pt"), "epochs": 5, "batch_size": 64}
    victim = Recipe(model="smallcnn", epochs=8, batch_size=64, lr=0.05)
    accs = {}
    for method, params in (("uc", uc), ("random", {})):
        prot = protect(mine, method, key=7, eps=16 / 255, **params)
        _, h = train_classifier(prot.images, mine.labels, 10, victim, eval_sets={"test": (te.images, te.labels)},
                                hooks=[parse_defense("aug:2:flip=false").hook(10)])
        accs[method] = h.epochs[-1]["test_acc"]
    assert accs["random"] > 0.85, accs  # the victim learns digits through random noise
    assert accs["uc"] < accs["random"] - 0.25, accs
