"""The victim audit: efficacy on real digits, the results contract, resume, and the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import run_cli
from unlearnable.audit.evaluate import evaluate
from unlearnable.data import load
from unlearnable.protect import Key, protect
from unlearnable.train.loop import Recipe, lr_at


@pytest.fixture(scope="module")
def digits():
    """1,000 real MNIST training digits (100 per class) and 500 clean test digits."""
    ds = load("mnist5k")
    train, test = ds.indices("train"), ds.indices("test")
    keep = torch.cat([train[ds.labels[train] == c][:100] for c in range(10)] + [test[:500]])
    return ds.subset(keep)


FAST = Recipe(model="smallcnn", epochs=5, batch_size=64, lr=0.05, seed=0)


@pytest.mark.slow  # ~22 s; cuda is not the recommended method (its efficacy rows: bench/efficacy.py, docs)
def test_cuda_makes_digits_unlearnable_and_random_noise_does_not(digits):
    cuda = protect(digits, "cuda", key=Key.from_seed(7))
    res = evaluate(cuda, digits, FAST)
    assert res["clean_acc"] > 0.80, res["clean_acc"]
    assert res["protected_acc"] < 0.45, res["protected_acc"]  # collapses towards chance (0.10)
    assert res["protected_train_acc"] > 0.9  # the victim fits the protected data: it learnt the shortcut
    noise = protect(digits, "random", key=Key.from_seed(7), eps=8 / 255)
    clean_run = {"acc": res["clean_acc"], "curve": res["curves"]["clean"], "wall_s": res["wall_s"]["clean"]}
    res_noise = evaluate(noise, digits, FAST, clean_result=clean_run)
    assert res_noise["protected_acc"] > 0.75  # the control: same-size random noise does not protect


def test_results_contract(digits):
    small = digits.subset(torch.arange(0, len(digits), 5))
    res = evaluate(protect(small, "cuda", key=1), small, Recipe(model="smallcnn", epochs=1, batch_size=32))
    for key in ("clean_acc", "protected_acc", "gap", "curves", "wall_s", "recipe", "setup"):
        assert key in res
    assert res["gap"] == pytest.approx(res["clean_acc"] - res["protected_acc"])
    assert len(res["curves"]["protected"]) == 1 and "test_acc" in res["curves"]["protected"][0]
    assert res["protected_best_epoch"] == 1 and res["protected_best_acc"] == res["protected_acc"]  # one epoch
    assert res["setup"]["world_size"] == 1 and res["setup"]["per_rank_batch_size"] == 32


def test_best_epoch_is_the_first_highest_scored_epoch():
    from unlearnable.audit.evaluate import best_epoch
    assert best_epoch([{"test_acc": 0.3}, {"test_acc": 0.7}, {"test_acc": 0.7}, {"test_acc": 0.25}]) == (0.7, 2)
    assert best_epoch([{"train_acc": 0.9}]) == (None, None) and best_epoch([]) == (None, None)


def test_lr_scaling_and_warmup():
    r = Recipe(lr=0.1, batch_size=512, base_batch=128, lr_scaling="linear", warmup_epochs=1, epochs=2)
    assert r.scaled_lr() == pytest.approx(0.4)
    assert Recipe(lr=0.1, batch_size=512, lr_scaling="sqrt").scaled_lr() == pytest.approx(0.2)
    assert lr_at(r, 0, 10) == pytest.approx(0.04) and lr_at(r, 9, 10) == pytest.approx(0.4)
    assert lr_at(r, 19, 10) < 0.01
    from unlearnable.runtime.schedule import scaling_note
    assert scaling_note(0.1, 128, "linear") == "linear scaling of 0.1 @ 128"
    assert scaling_note(0.05, 128, "none") == "not scaled with the batch"


def test_evaluate_cli_end_to_end(npz_path, tmp_path, capsys):
    prot = tmp_path / "prot"
    assert run_cli(["protect", str(npz_path), "-m", "cuda", "-o", str(prot)], capsys)[0] == 0
    out = tmp_path / "audit"
    code, printed, err = run_cli(["evaluate", "--protected", str(prot), "--clean", str(npz_path), "--model",
                                  "smallcnn", "--epochs", "2", "--batch-size", "8", "--out", str(out), "--device",
                                  "cpu"], capsys)
    res = json.loads((out / "results.json").read_text())
    assert code == (0 if res["valid"] else 3), err  # 3: the tiny clean victim did not beat chance clearly
    assert {"clean_acc", "protected_acc"} <= set(res) and res["method"] == "cuda"
    assert f"(best epoch {res['protected_best_epoch']}: {res['protected_best_acc']:.4f})" in printed
    assert (out / "curves.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".audit.partial*"))  # checkpoints cleaned up after success
    # which classes the victim kept, beside which classes the clean images' own colour names
    cues = res["colour_cues"]
    assert cues["test_split"] == "test" and cues["cue"] == "brightness" and 0 <= cues["acc"] <= 1
    assert set(res["classes_learnt"]) <= set(c["class"] for c in cues["per_class"]) and res["learnt_above"] == 0.5
    md = (out / "report.md").read_text()
    assert ("own brightness alone tells apart" in md) == bool(cues["named"])
    assert ("still tells apart on clean test images" in md) == bool(res["classes_learnt"])
    assert ("tells no class apart" in md) == (not res["classes_learnt"])
    assert f"best epoch on the clean test split: {100 * res['protected_best_acc']:.1f}% (epoch " in md
    code, _, err = run_cli(["evaluate", "--protected", str(prot), "--clean", str(npz_path), "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err


def test_evaluate_refuses_mismatched_data(npz_path, rgb_npz_path, tmp_path, capsys):
    code, _, err = run_cli(["evaluate", "--protected", str(rgb_npz_path), "--clean", str(npz_path), "--model",
                            "smallcnn", "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    assert code == 2 and err.count("\n") == 1 and "images are (3, 16, 16)" in err
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(["evaluate", "--protected", str(npz_path), "--clean", str(npz_path), "--model",
                            "resnet19"], capsys)
    assert code == 2 and "did you mean 'resnet18'" in err
