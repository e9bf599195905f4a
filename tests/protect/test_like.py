"""``protect NEW --like OUT --key KEY``: same bytes for seen images, stored perturbations for new ones, refusals."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli, write_folder
from helpers import write_train_test_npz as npz
from unlearnable.data import load
from unlearnable.protect import METHODS, add_within_linf
from unlearnable.protect.keys import Key, load_key, save_key
from unlearnable.protect.native import apply_native
from unlearnable.protect.sealed import REUSABLE, STATE, open_state

TILES = ["-m", "tiles"]


def protect(capsys, *args: str) -> None:
    code, _, err = run_cli(["protect", *map(str, args)], capsys)
    assert code == 0, err


def train_images(out: Path) -> np.ndarray:
    return load(next(out.glob("*.npz"))).split("train").images.numpy()


# Every reusable method whose fit reads no pixels (only the key, labels and shapes), and ``tiles``, whose default fit
# reads each class's mean colour once (the same archive gives the same fit); a method with a ``mode`` is reusable in
# its class-wise mode.
MODEL_FREE = sorted({n for n in METHODS.names() if n in REUSABLE and not METHODS.get(n)().fit_reads_pixels}
                    | {"tiles"})


def test_model_free_list_is_not_empty():
    assert {"cuda", "tiles"} <= set(MODEL_FREE)


@pytest.mark.parametrize("method", MODEL_FREE)
def test_model_free_methods_reuse_seen_bytes_and_class_noise_for_new_images(method, tmp_path, capsys):
    params = ["-p", "mode=classwise"] if hasattr(METHODS.get(method).Params, "mode") else []
    fit_src, new_src = npz(tmp_path / "fit.npz"), npz(tmp_path / "new.npz", seed=7, n=10)
    protect(capsys, fit_src, "-m", method, *params, "-o", tmp_path / "out")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["like"] == {"reusable": True, "state": STATE} and STATE in m["output"]["sha256"]
    key = tmp_path / "out.key"
    protect(capsys, fit_src, "--like", tmp_path / "out", "--key", key, "-o", tmp_path / "again")
    assert (tmp_path / "out" / "fit.npz").read_bytes() == (tmp_path / "again" / "fit.npz").read_bytes()
    protect(capsys, new_src, "--like", tmp_path / "out", "--key", key, "-o", tmp_path / "new")
    # The fit of these methods depends only on the key and the data's shape/classes: refitting on the archive
    # with the same key shows what the stored perturbation must do to the new images.
    algo = METHODS.get(method)(**dict(p.split("=") for p in params[1::2]))
    pert = algo.fit(load(fit_src).split("train"), load_key(key))
    new = load(new_src).split("train")
    assert np.array_equal(train_images(tmp_path / "new"), algo.apply(new, pert).numpy())
    assert not np.array_equal(train_images(tmp_path / "new"), new.images.numpy())


def test_classes_are_matched_by_name_in_a_new_upload(tmp_path, capsys):
    write_folder(tmp_path / "archive", classes=("cat", "dog"))
    protect(capsys, tmp_path / "archive", *TILES, "-o", tmp_path / "out")
    write_folder(tmp_path / "upload", classes=("dog",))
    protect(capsys, tmp_path / "upload", "--like", tmp_path / "out", "--key", tmp_path / "out.key",
            "-o", tmp_path / "new", "--splits", "all")
    _, pert, _ = open_state(tmp_path / "out", load_key(tmp_path / "out.key"))
    upload, got = load(tmp_path / "upload"), load(tmp_path / "new")
    as_dog = upload.images.int() - got.images.int()
    algo = METHODS.get("tiles")()
    dog = type(upload)(upload.images, torch.ones(len(upload), dtype=torch.long), upload.ids, upload.splits,
                       ("cat", "dog"), upload.meta)
    assert torch.equal(got.images, algo.apply(dog, pert)) and as_dog.abs().max() > 0
    write_folder(tmp_path / "birds", classes=("bird",))
    code, _, err = run_cli(["protect", str(tmp_path / "birds"), "--like", str(tmp_path / "out"), "--key",
                            str(tmp_path / "out.key"), "-o", str(tmp_path / "b")], capsys)
    assert code == 2 and "class 'bird' is not one of the 2 classes" in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("method", ["tiles", "lsp"])
def test_images_of_another_size_are_protected_at_native_size_like_a_fresh_fit(method, tmp_path, capsys):
    # tiles draws its noise at any size; lsp's 16x16 patches are applied through the working-size rule
    # (protect/native.py), exactly as a fresh protect job applies them to images of other sizes.
    fit_src, big = npz(tmp_path / "fit.npz"), npz(tmp_path / "big.npz", seed=5, size=20)
    protect(capsys, fit_src, "-m", method, "-o", tmp_path / "out")
    key = tmp_path / "out.key"
    protect(capsys, big, "--like", tmp_path / "out", "--key", key, "-o", tmp_path / "new")
    _, pert, _ = open_state(tmp_path / "out", load_key(key))
    new = load(big).split("train")
    got = train_images(tmp_path / "new")
    assert got.shape[-2:] == (20, 20) and not np.array_equal(got, new.images.numpy())
    assert np.array_equal(got, apply_native(METHODS.get(method)(), pert, new, (16, 16)).numpy())


def test_em_classwise_reuses_the_learnt_class_noise(tmp_path, capsys):
    src, new_src = npz(tmp_path / "fit.npz"), npz(tmp_path / "new.npz", seed=3, n=8)
    protect(capsys, src, "-m", "em", "-p", "mode=classwise", "-p", "max_outer=1", "-p", "train_steps=2", "-p",
            "pgd_steps=2", "-p", "batch_size=8", "-o", tmp_path / "out")
    key = tmp_path / "out.key"
    protect(capsys, src, "--like", tmp_path / "out", "--key", key, "-o", tmp_path / "again")
    assert np.array_equal(train_images(tmp_path / "out"), train_images(tmp_path / "again"))
    protect(capsys, new_src, "--like", tmp_path / "out", "--key", key, "-o", tmp_path / "new")
    _, table, _ = open_state(tmp_path / "out", load_key(key))
    new = load(new_src).split("train")
    want = (new.images.to(torch.int16) + table.steps[new.labels].to(torch.int16)).clamp(0, 255).to(torch.uint8)
    assert np.array_equal(train_images(tmp_path / "new"), want.numpy())


def clusters(out: Path) -> dict[str, int]:
    with open(out / "clusters.csv") as f:
        return {r["id"]: int(r["cluster"]) for r in csv.DictReader(f)}


def test_uc_seen_images_keep_their_cluster_and_new_ones_go_to_the_nearest_centre(tmp_path, capsys):
    src = npz(tmp_path / "fit.npz", n=24)
    flags = ["--clusters", "3", "--epochs", "1", "--batch-size", "8", "-p", "ssl_epochs=0", "-p", "width=8",
             "-p", "gen_width=8", "-p", "shape=smooth"]  # periodic UC: tests/test_uc_periodic.py
    protect(capsys, src, "-m", "uc", *flags, "-o", tmp_path / "out")
    key = tmp_path / "out.key"
    protect(capsys, src, "--like", tmp_path / "out", "--key", key, "-o", tmp_path / "again")
    assert (tmp_path / "out" / "fit.npz").read_bytes() == (tmp_path / "again" / "fit.npz").read_bytes()
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["reused"]["seen"] == 24
    # The same pixels under other ids (reversed order) are new images: each must land in the cluster K-means gave
    # those pixels, through the stored surrogate, standardisation and centres.
    rev = npz(tmp_path / "rev.npz", n=24, order=slice(None, None, -1))
    protect(capsys, rev, "--like", tmp_path / "out", "--key", key, "-o", tmp_path / "new")
    reused = json.loads((tmp_path / "new" / "manifest.json").read_text())["reused"]
    assert reused["seen"] == 0 and reused["assigned_to_nearest_centre"] == 24
    fitted, ids = clusters(tmp_path / "out"), load(src).split("train").ids
    new_ids = load(rev).split("train").ids
    got = clusters(tmp_path / "new")
    assert [got[i] for i in new_ids] == [fitted[i] for i in reversed(ids)]
    assert len(set(got.values())) > 1
    _, pert, _ = open_state(tmp_path / "out", load_key(key))
    new = load(rev).split("train")
    rows = torch.tensor([got[i] for i in new.ids])
    want = add_within_linf(new.images, pert.deltas[rows], 16 / 255)
    assert np.array_equal(train_images(tmp_path / "new"), want.numpy())


def test_sealed_state_hides_the_perturbation_and_the_key(tmp_path, capsys):
    protect(capsys, npz(tmp_path / "fit.npz"), *TILES, "-o", tmp_path / "out")
    key = load_key(tmp_path / "out.key")
    blob = (tmp_path / "out" / STATE).read_bytes()
    for f in (tmp_path / "out").iterdir():
        assert key.secret.hex().encode() not in f.read_bytes() and key.secret not in f.read_bytes()
    assert b"PK\x03\x04" not in blob and b"tiles" not in blob and b"TileCodes" not in blob  # no readable pickle
    pert = METHODS.get("tiles")().fit(load(tmp_path / "fit.npz").split("train"), key)
    assert pert.tiles.numpy().tobytes()[:64] not in blob


def bad_like_cases(tmp_path: Path, capsys) -> list[tuple[list[str], str]]:
    src = npz(tmp_path / "fit.npz")
    protect(capsys, src, *TILES, "-o", tmp_path / "out")
    protect(capsys, src, "-m", "random", "-o", tmp_path / "sw")
    protect(capsys, src, *TILES, "-o", tmp_path / "nostate")
    (tmp_path / "nostate" / STATE).unlink()
    protect(capsys, src, *TILES, "-o", tmp_path / "corrupt")
    raw = bytearray((tmp_path / "corrupt" / STATE).read_bytes())
    raw[len(raw) // 2] ^= 1
    (tmp_path / "corrupt" / STATE).write_bytes(bytes(raw))
    save_key(Key.new(), tmp_path / "other.key")
    rgb = npz(tmp_path / "rgb.npz", c=3)
    key = ["--key", str(tmp_path / "out.key")]
    like = ["--like", str(tmp_path / "out")]
    return [
        ([str(src), "--like", str(tmp_path / "sw"), "--key", str(tmp_path / "sw.key")], "sample-wise noise"),
        ([str(src), *like, "--key", str(tmp_path / "other.key")], "is not the key that protected"),
        ([str(rgb), *like, *key], "images have 3 channel(s)"),
        ([str(src), "--like", str(tmp_path / "corrupt"), "--key", str(tmp_path / "corrupt.key")],
         "authentication failed"),
        ([str(src), "--like", str(tmp_path / "nostate"), "--key", str(tmp_path / "nostate.key")],
         "stored perturbation state is missing"),
        ([str(src), *like], "--key: required with --like"),
        ([str(src), *like, *key, "--eps", "4/255"], "parameters cannot change with --like"),
        ([str(src), *like, *key, "-m", "cuda"], "was protected with 'tiles'"),
        ([str(src), "--like", str(tmp_path / "fit.npz"), *key], "not a protect output"),
        ([str(src)], "--method: missing"),
    ]


def test_like_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, capsys):
    cases = bad_like_cases(tmp_path, capsys)
    before = sorted(os.listdir(tmp_path))
    for args, message in cases:
        code, out, err = run_cli(["protect", *args, "-o", str(tmp_path / "new")], capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, err)
        assert sorted(os.listdir(tmp_path)) == before, args
