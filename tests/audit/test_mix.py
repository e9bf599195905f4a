"""--mix R: only a seeded fraction of the training split is protected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _efficacy import single_thread  # noqa: F401
from unlearnable.audit.evaluate import evaluate, mix_indices, mix_protected
from unlearnable.cli import main
from unlearnable.data import ImageSet
from unlearnable.train.defenses import parse_defenses
from unlearnable.train.loop import Recipe


def _pair(n: int = 40) -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 200, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    splits = ("train",) * (n - 10) + ("test",) * 10
    clean = ImageSet(img, torch.arange(n) % 2, tuple(f"s{i}" for i in range(n)), splits, ("a", "b"))
    return clean.with_images(img + 50), clean  # "protected": every pixel +50


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.37, 1.0])
def test_exactly_round_r_n_rows_are_protected(ratio):
    prot, clean = _pair()
    p, c = prot.split("train"), clean.split("train")
    mixed, rows = mix_protected(p, c, ratio, seed=3)
    changed = (mixed.images != c.images).flatten(1).any(1)
    assert int(changed.sum()) == round(ratio * len(c)) == len(rows)
    assert torch.equal(changed.nonzero()[:, 0], rows)
    assert torch.equal(mixed.images[rows], p.images[rows])
    assert mixed.ids == c.ids and torch.equal(mixed.labels, c.labels)


def test_same_seed_same_samples():
    assert torch.equal(mix_indices(1000, 0.5, 7), mix_indices(1000, 0.5, 7))
    assert not torch.equal(mix_indices(1000, 0.5, 7), mix_indices(1000, 0.5, 8))
    assert set(mix_indices(1000, 0.2, 7).tolist()) <= set(range(1000))


def test_evaluate_records_mix_and_defences():
    prot, clean = _pair()
    r = Recipe(model="smallcnn", epochs=1, batch_size=16, lr=0.05)
    res = evaluate(prot, clean, r, mix=0.5, defenses=parse_defenses(["jpeg:50", "aug:2"]))
    assert res["mix"] == 0.5 and res["protected_samples"] == 15 and res["defenses"] == ["jpeg:50", "aug:2"]
    assert 0 <= res["clean_acc"] <= 1 and 0 <= res["protected_acc"] <= 1
    assert "clean_rows_acc" not in res  # the floor is asked for (the CLI does), not implied


def test_evaluate_floor_is_a_victim_on_the_clean_rows_alone(monkeypatch):
    """floor=True with 0 < mix < 1: one more victim, on exactly the rows mix leaves clean, for as many SGD steps as
    the others (epochs x N / rows); nothing extra at mix 1."""
    from unlearnable.audit import evaluate as E

    prot, clean = _pair()
    seen = []
    real = E.train_and_test

    def spy(train, test, recipe, *a, **kw):
        seen.append((kw.get("desc", a[4] if len(a) > 4 else None), train.ids, recipe.epochs))
        return real(train, test, recipe, *a, **kw)

    monkeypatch.setattr(E, "train_and_test", spy)
    r = Recipe(model="smallcnn", epochs=2, batch_size=16, lr=0.05, seed=4)
    res = evaluate(prot, clean, r, mix=0.5, floor=True)
    (ids, epochs), = [(i, e) for d, i, e in seen if d == "clean-rows victim"]
    train_ids = clean.split("train").ids
    assert set(ids) == set(train_ids) - {train_ids[i] for i in mix_indices(30, 0.5, 4).tolist()}
    assert len(ids) == 15 and epochs == 4  # half the rows: twice the epochs
    assert res["clean_rows"] == {"rows": 15, "epochs": 4} and 0 <= res["clean_rows_acc"] <= 1
    assert "clean-rows only" in res["curves"]
    seen.clear()
    assert "clean_rows_acc" not in evaluate(prot, clean, r, mix=1.0, floor=True)
    assert [d for d, _, _ in seen] == ["protected victim", "clean victim"]


def _npz(tmp_path) -> str:
    prot, clean = _pair()
    path = tmp_path / "tiny.npz"
    tr, te = clean.split("train"), clean.split("test")
    np.savez(path, train_images=tr.images[:, 0].numpy(), train_labels=tr.labels.numpy(),
             test_images=te.images[:, 0].numpy(), test_labels=te.labels.numpy())
    return str(path)


@pytest.mark.parametrize("args,msg", [(["--mix", "1.5"], "--mix"), (["--mix", "abc"], "--mix"),
                                      (["--defense", "jpg"], "did you mean 'jpeg'"),
                                      (["--defense", "jpeg:abc"], "not a number")])
def test_evaluate_cli_bad_input(tmp_path, capsys, args, msg):
    src = _npz(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--protected", src, "--clean", src, "--out", str(out), "--model", "smallcnn",
              "--epochs", "1", *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and msg in err
    assert not out.exists()


def test_evaluate_cli_with_defence_and_mix(tmp_path, capsys):
    import json

    src = _npz(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:  # exit 0, or 3 when the 1-epoch clean victim did not beat chance
        main(["evaluate", "--protected", src, "--clean", src, "--out", str(out), "--model", "smallcnn", "--epochs",
              "1", "--batch-size", "16", "--defense", "grayscale", "--defense", "cutout:4", "--mix", "1/2", "--device",
              "cpu"])
        raise SystemExit(0)
    res = json.loads((out / "results.json").read_text())
    assert e.value.code == (0 if res["valid"] else 3)
    assert res["mix"] == 0.5 and res["defenses"] == ["grayscale", "cutout:4"] and res["protected_samples"] == 15
    assert res["clean_rows"] == {"rows": 15, "epochs": 2} and "clean_rows_acc" in capsys.readouterr().out
