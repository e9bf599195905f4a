"""Unlearnable Clusters: contract, K-means, generator cost, surrogate weights, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli
from unlearnable.data import ImageSet
from unlearnable.errors import UserError
from unlearnable.models import build_model
from unlearnable.models.generators import NoiseGenerator
from unlearnable.protect import METHODS, protect
from unlearnable.protect.keys import Key
from unlearnable.protect.kmeans import kmeans
from unlearnable.protect.ssl import load_surrogate_weights
from unlearnable.protect.uc import UnlearnableClusters, _target_clusters

TINY = METHODS.get("uc").tiny_params


def blobs(n: int, c: int, size: int, classes: int = 4, seed: int = 0) -> ImageSet:
    """Class-dependent bright squares on noise: uint8 ``(N, C, H, W)``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, (n, size, size, c)).astype(np.int64)
    for i, k in enumerate(y):
        r, q = (k % 2) * size // 2, (k // 2 % 2) * size // 2
        x[i, r:r + size // 2, q:q + size // 2] += 150
    arr = np.clip(x, 0, 255).astype(np.uint8)
    return ImageSet.from_numpy(arr[..., 0] if c == 1 else arr, y)


def write_npz(path: Path, n_train: int = 24, size: int = 16) -> Path:
    arrays = {}
    for split, n, seed in (("train", n_train, 0), ("test", 12, 1)):
        ds = blobs(n, 1, size, 3, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = ds.to_numpy(), ds.labels.numpy()[:, None]
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("shape", [(8, 3, 16, 16), (16, 1, 28, 28)])
def test_contract_shape_budget_determinism_untouched(shape: tuple[int, ...]) -> None:
    n, c, s, _ = shape
    ds = blobs(n, c, s)
    before = ds.images.clone()
    a = protect(ds, "uc", key=3, **TINY)
    b = protect(ds, "uc", key=3, **TINY)
    assert a.images.shape == ds.images.shape and a.images.dtype == torch.uint8
    assert torch.equal(ds.images, before)
    assert torch.equal(a.images, b.images)  # same key + data => same bytes
    diff = (a.images.int() - ds.images.int()).abs()
    assert int(diff.max()) <= 16 and int(diff.max()) > 0
    other = protect(ds, "uc", key=4, **TINY)
    assert not torch.equal(a.images, other.images)


def test_label_agnostic_labels_never_read() -> None:
    ds = blobs(16, 1, 16)
    shuffled = ImageSet(ds.images, torch.zeros_like(ds.labels), ds.ids, ds.splits, ("only",))
    assert UnlearnableClusters.label_agnostic
    assert torch.equal(protect(ds, "uc", key=1, **TINY).images, protect(shuffled, "uc", key=1, **TINY).images)


def test_kmeans_seeded_recovers_blobs() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + torch.randn(50, 2, generator=g) for c in centers])
    r1 = kmeans(x, 3, Key.from_seed(0).generator("k"))
    r2 = kmeans(x, 3, Key.from_seed(0).generator("k"))
    assert torch.equal(r1.assign, r2.assign) and torch.equal(r1.centers, r2.centers)
    for k in range(3):  # every true blob is one cluster
        assert len(r1.assign[k * 50:(k + 1) * 50].unique()) == 1
    assert len(r1.assign.unique()) == 3


def test_kmeans_restarts_keep_the_lowest_inertia() -> None:
    # 8 blobs of uneven spread in 8-d, K=8: single k-means++ starts sometimes merge two blobs and split another
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(8, 8, generator=g) * 4
    x = torch.cat([c + torch.randn(40, 8, generator=g) * (0.5 + i / 4) for i, c in enumerate(centers)])
    singles = [kmeans(x, 8, torch.Generator().manual_seed(s)) for s in range(12)]
    assert len({round(r.inertia, 3) for r in singles}) > 1  # the starts do disagree here
    first = kmeans(x, 8, torch.Generator().manual_seed(0))
    best = kmeans(x, 8, torch.Generator().manual_seed(0), restarts=6)
    assert len(best.inertias) == 6 and best.inertia == min(best.inertias) <= first.inertia
    assert best.inertias[0] == first.inertia  # restart 0 is the single run: restarts=1 behaves as before
    again = kmeans(x, 8, torch.Generator().manual_seed(0), restarts=6)
    assert torch.equal(again.assign, best.assign)  # still deterministic for a key
    recomputed = ((x - best.centers[best.assign]) ** 2).sum()
    assert abs(float(recomputed) - best.inertia) < 1e-3 * best.inertia  # the kept assignment is the kept inertia


def test_targets_are_a_derangement() -> None:
    for k in (2, 3, 10):
        t = _target_clusters(k, Key.from_seed(k))
        assert sorted(t.tolist()) == list(range(k)) and all(t[i] != i for i in range(k))


def test_generator_budget_linf_and_l2() -> None:
    codes = torch.rand(5, 3, 8, 8) * 2 - 1
    d = NoiseGenerator(codes, 8 / 255, "linf", width=8)()
    assert d.shape == (5, 3, 8, 8) and float(d.detach().abs().max()) <= 8 / 255 + 1e-7
    d2 = NoiseGenerator(codes, 0.5, "l2", width=8)()
    assert float(d2.detach().flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5


@pytest.mark.parametrize("k", [2, 6])
def test_one_pass_per_epoch_whatever_k(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The surrogate sees each sample once per epoch and the generator runs once per step, for any K."""
    from unlearnable.protect import uc

    ds = blobs(24, 1, 16)
    calls = {"gen": 0, "images": 0}
    gen_forward, feat = NoiseGenerator.forward, uc._Standardised.features

    def count_gen(self):  # noqa: ANN001, ANN202
        calls["gen"] += 1
        return gen_forward(self)

    def count_images(self, x):  # noqa: ANN001, ANN202
        calls["images"] += len(x)
        return feat(self, x)

    monkeypatch.setattr(NoiseGenerator, "forward", count_gen)
    monkeypatch.setattr(uc._Standardised, "features", count_images)
    pert = UnlearnableClusters(**(TINY | {"clusters": k, "epochs": 2, "ssl_epochs": 0})).fit(ds, Key.from_seed(0))
    assert calls["gen"] == 2 * -(-24 // TINY["batch_size"]) + 1  # one per step + the final draw
    assert calls["images"] == 2 * 24  # one pass over the data per epoch
    assert pert.deltas.shape == (k, 1, 16, 16) and len(pert.assign.unique()) == k


@pytest.mark.parametrize("stage, ssl_epochs, epochs, stop_at", [("generator", 1, 3, 1), ("surrogate", 3, 2, 2)])
def test_resume_gives_same_result(tmp_path: Path, stage: str, ssl_epochs: int, epochs: int, stop_at: int) -> None:
    """Interrupted after a checkpoint of the SimCLR or the generator stage, a resumed fit gives the same bytes."""
    ds = blobs(16, 1, 16)
    params = TINY | {"epochs": epochs, "ssl_epochs": ssl_epochs}
    ref = UnlearnableClusters(**params).fit(ds, Key.from_seed(5))
    seen: list[tuple[str, int]] = []

    def stop(at: str, epoch: int) -> None:
        seen.append((at, epoch))
        if (at, epoch) == (stage, stop_at):
            raise KeyboardInterrupt

    algo = UnlearnableClusters(**params)
    algo.checkpoint_dir, algo.on_epoch_end = tmp_path, stop
    with pytest.raises(KeyboardInterrupt):
        algo.fit(ds, Key.from_seed(5))
    assert seen[-1] == (stage, stop_at) and seen[0] == ("surrogate", 1)
    again = UnlearnableClusters(**params)
    again.checkpoint_dir = tmp_path
    out = again.fit(ds, Key.from_seed(5))
    assert out.report == ref.report
    assert torch.equal(out.deltas, ref.deltas) and torch.equal(out.assign, ref.assign)


def test_surrogate_weights_checked(tmp_path: Path) -> None:
    good = build_model("smallcnn", 1, 10, 16)
    torch.save({"state_dict": {f"module.{k}": v for k, v in good.state_dict().items()}}, tmp_path / "good.pt")
    fresh = build_model("smallcnn", 1, 2, 16)
    rep = load_surrogate_weights(fresh, tmp_path / "good.pt")
    assert rep["missing"] == 0 and rep["matched"] == len(fresh.features.state_dict())
    assert torch.equal(fresh.features[0][0].weight, good.features[0][0].weight)
    torch.save(build_model("resnet18", 1, 10, 16).state_dict(), tmp_path / "other.pt")
    with pytest.raises(UserError, match="match"):
        load_surrogate_weights(build_model("smallcnn", 1, 2, 16), tmp_path / "other.pt")


def test_cli_uc_writes_clusters_and_bad_weights_exit_2(tmp_path: Path, capsys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # in-process; the real entry point's exit path is tested by tests/cli/test_cli.py
    write_npz(tmp_path / "tiny.npz")
    flags = ["--clusters", "2", "--epochs", "1", "--batch-size", "8", "-p", "ssl_epochs=0", "-p", "width=8",
             "-p", "gen_width=8"]
    code, _, err = run_cli(["protect", "tiny.npz", "--method", "uc", "--out", "out", *flags], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["method"] == "uc" and m["params"]["clusters"] == 2 and m["linf_budget"] == pytest.approx(16 / 255)
    assert m["fit"]["generator"]["setup"]["world_size"] == 1 and "clusters.csv" in m["output"]["sha256"]
    assert len((tmp_path / "out" / "clusters.csv").read_text().splitlines()) == 25
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    (tmp_path / "bad.pt").write_text("not weights")
    torch.save(build_model("resnet18", 1, 3, 16).state_dict(), tmp_path / "wrong.pt")
    for bad in ("bad.pt", "wrong.pt", "missing.pt"):
        before = sorted(p.name for p in tmp_path.iterdir())
        code, _, err = run_cli(["protect", "tiny.npz", "--method", "uc", "--out", "o2", "--surrogate-weights", bad,
                                   *flags], capsys)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and errors[0].startswith("error: --surrogate-weights"), err
        assert err.rstrip().endswith(errors[0]) and "Traceback" not in err
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_protect_source_interrupted_then_resumed_gives_same_files(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnable.protect.run import partial_dir, protect_source

    src = write_npz(tmp_path / "tiny.npz")
    params = {k: str(v) for k, v in (TINY | {"epochs": 3}).items()}

    def stop(stage: str, epoch: int) -> None:
        if stage == "generator" and epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(UnlearnableClusters, "on_epoch_end", staticmethod(stop))
    with pytest.raises(KeyboardInterrupt):
        protect_source(str(src), "uc", tmp_path / "out", params=params, quiet=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.key").exists()
    assert (partial_dir(tmp_path / "out") / "key").is_file()  # parked, mode 0600, for --resume
    monkeypatch.setattr(UnlearnableClusters, "on_epoch_end", None)
    m = protect_source(str(src), "uc", tmp_path / "out", params=params, quiet=True, resume=True)
    assert m["fit"]["generator"]["epochs"][-1]["epoch"] == 3 and not partial_dir(tmp_path / "out").exists()
    ref = protect_source(str(src), "uc", tmp_path / "ref", key_path=tmp_path / "out.key", params=params, quiet=True)
    assert ref["output"]["sha256"] == m["output"]["sha256"]
