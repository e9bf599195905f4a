"""Chance on imbalanced data: the accuracy of a victim that learnt nothing is the commonest test class's share, not
1 / K, and a class is told apart only when its precision beats its share (unlearnable.audit.validity / classes)."""

from __future__ import annotations

import random

import pytest
import torch

from unlearnable.audit.classes import LEARNT_ABOVE, balanced_accuracy, classes_learnt, per_class
from unlearnable.audit.cues import colour_cues
from unlearnable.audit.evaluate import evaluate
from unlearnable.audit.validity import baseline_valid, chance_level, chance_note
from unlearnable.data import ImageSet
from unlearnable.train.loop import Recipe


def test_chance_is_the_commonest_test_class_share():
    assert chance_level(torch.tensor([0, 1, 2, 3] * 5), 4) == 0.25  # balanced: the uniform 1 / K
    assert chance_level(torch.tensor([0] * 8 + [1, 2]), 3) == 0.8
    assert chance_level([2, 2, 2, 0], 7) == 0.75  # classes absent from the split change nothing
    assert chance_level(torch.tensor([], dtype=torch.long), 5) == 0.2  # no test labels: uniform
    assert chance_level([0, 1], 4) == 0.5  # two of four classes in the split: each is half of it


def test_a_very_imbalanced_split_still_has_a_reachable_validity_threshold():
    from unlearnable.audit.validity import baseline_margin

    assert baseline_margin(0.1) == pytest.approx(0.225) and baseline_margin(0.5) == pytest.approx(0.125)
    assert baseline_margin(0.8) == pytest.approx(0.1)  # the last chance the ten-point floor applies to
    assert baseline_margin(0.9) == pytest.approx(0.05) and baseline_margin(0.99) == pytest.approx(0.005)
    assert baseline_valid(0.96, 0.9)[0] and not baseline_valid(0.94, 0.9)[0]  # 95% needed, not 100%


def test_the_note_names_the_class_that_sets_chance_only_when_it_is_not_uniform():
    assert chance_note([0, 1, 2, 0, 1, 2], ("a", "b", "c")) == ""
    note = chance_note([1] * 67 + [0] * 20 + [2] * 13, ("mel", "nv", "bcc"))
    assert note == "chance is the share of the commonest class, 'nv', among the 100 test images (uniform chance 33.3%)"


def test_balanced_accuracy_is_the_mean_recall_over_classes_with_test_images():
    assert balanced_accuracy([[8, 2], [5, 5]]) == pytest.approx(0.65)
    assert balanced_accuracy([[10, 0, 0], [10, 0, 0], [0, 0, 0]]) == pytest.approx(0.5)  # a class with no images
    assert balanced_accuracy([[0, 20, 0], [0, 67, 0], [0, 13, 0]]) == round(1 / 3, 4)  # the commonest, always
    assert balanced_accuracy(None) is None and balanced_accuracy([[0, 0], [0, 0]]) is None


def test_a_victim_that_answers_the_commonest_class_learnt_nothing():
    # two images in three of class 'nv': always answering 'nv' scores 67% with recall 100%, precision 67%
    cm = [[0, 20, 0], [0, 67, 0], [0, 13, 0]]
    rows = per_class(cm, ("mel", "nv", "bcc"))
    assert rows[1]["recall"] == 1.0 and rows[1]["precision"] == 0.67 > LEARNT_ABOVE
    assert classes_learnt(rows) == []
    assert not baseline_valid(0.67, chance_level([1] * 67 + [0] * 20 + [2] * 13, 3))[0]
    assert baseline_valid(0.67, 1 / 3)[0]  # what the uniform rule said: a valid baseline
    # a victim that does tell 'nv' apart (precision well above its share) still counts
    assert classes_learnt(per_class([[18, 2, 0], [1, 66, 0], [0, 1, 12]], ("mel", "nv", "bcc"))) == ["mel", "nv", "bcc"]


def test_on_balanced_splits_of_three_or_more_classes_the_rule_is_unchanged():
    rnd = random.Random(0)
    for _ in range(300):
        k = rnd.randint(3, 12)
        cm = [[0] * k for _ in range(k)]
        for t in range(k):
            for _ in range(20):
                cm[t][t if rnd.random() < rnd.random() else rnd.randrange(k)] += 1
        rows = per_class(cm, tuple(f"c{i}" for i in range(k)))
        old = [c["class"] for c in rows if min(c["recall"], c["precision"]) > LEARNT_ABOVE]
        assert classes_learnt(rows) == old


def _noise_set(counts: list[int], seed: int = 0) -> ImageSet:
    """Pure-noise 8x8 images whose labels follow ``counts`` per class in both splits: nothing to learn but the
    class counts."""
    g = torch.Generator().manual_seed(seed)
    labels = [k for k, n in enumerate(counts) for _ in range(n)] * 2
    splits = ["train"] * sum(counts) + ["test"] * sum(counts)
    images = torch.randint(0, 256, (len(labels), 1, 8, 8), generator=g, dtype=torch.uint8)
    return ImageSet(images=images, labels=torch.tensor(labels), ids=tuple(f"s{i}" for i in range(len(labels))),
                    splits=tuple(splits), classes=tuple(f"c{k}" for k in range(len(counts))))


def test_evaluate_calls_a_clean_victim_that_learnt_only_the_class_counts_invalid():
    ds = _noise_set([80, 10, 10])
    r = evaluate(ds, ds, Recipe(model="smallcnn", epochs=3, batch_size=32, lr=0.05, seed=0), "cpu")
    assert r["chance_acc"] == pytest.approx(0.8)
    # whatever it answers, a victim of noise images cannot beat the commonest class's 80% by 10 points; by 1 / K
    # (33%, needing 50%) this run was "valid"
    assert r["clean_acc"] < 0.9 and r["valid"] is False
    assert r["clean_balanced_acc"] < 0.6 and 0 <= r["protected_balanced_acc"] <= 1
    assert "chance 80.0%" in r["invalid_reason"]


def test_colour_cues_do_not_name_the_commonest_class_for_its_count():
    g = torch.Generator().manual_seed(0)
    counts = [70, 15, 15]
    labels = [k for k, n in enumerate(counts) for _ in range(n)] * 2
    images = (128 + 10 * torch.randn(len(labels), 1, 8, 8, generator=g)).round().clamp(0, 255).to(torch.uint8)
    ds = ImageSet(images=images, labels=torch.tensor(labels), ids=tuple(f"s{i}" for i in range(len(labels))),
                  splits=tuple(["train"] * 100 + ["test"] * 100), classes=("nv", "mel", "bcc"))
    c = colour_cues(ds, "test")
    assert c["chance"] == 0.7 and c["named"] == []


def test_verify_on_an_imbalanced_medmnist_archive_scores_against_the_commonest_class(tmp_path, capsys):
    """A DermaMNIST-shaped archive (one class is 70% of every split) through `protect --verify`: chance in the
    manifest and in the verdict's reason is that class's share, and the reason says so."""
    import json

    import numpy as np

    from helpers import run_cli

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 120), ("val", 20), ("test", 60)):
        y = np.array([0] * (7 * n // 10) + [1] * (n // 10) + [2] * (n - 7 * n // 10 - n // 10))
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = y.astype(np.uint8)[:, None]
    src = tmp_path / "dermamnist.npz"
    np.savez_compressed(src, **arrays)
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(src), "--method", "random", "--eps", "8/255", "--out", str(out),
                            "--verify", "--verify-epochs", "2"], capsys)
    v = json.loads((out / "manifest.json").read_text())["verify"]
    assert v["chance"] == 0.7
    # noise images: the clean twin cannot beat 70% by the margin it needs, so the run proves nothing (exit 3)
    assert v["verdict"] == "invalid" and code == 3, err
    assert "chance 70.0%" in v["reason"] and "commonest class, '0'" in v["reason"]
    assert v["above_share"] == 0.15 and v["classes_learnt"] == []
    cm = v["confusion"]
    assert v["balanced_acc"] == round(sum(cm[k][k] / sum(cm[k]) for k in range(3)) / 3, 4)
    assert v["chance_note"] and "| protected victim, balanced accuracy |" in (out / "report.md").read_text()


def test_the_evaluate_report_names_the_class_behind_chance_and_gives_balanced_accuracy(tmp_path):
    import json

    from unlearnable.report.kinds import evaluate as evaluate_report

    r = {"clean_acc": 0.8, "protected_acc": 0.67, "gap": 0.13, "relative_drop": 0.16, "chance_acc": 0.67,
         "chance_note": "chance is the share of the commonest class, 'nv', among the 100 test images (uniform "
                        "chance 14.3%)", "clean_balanced_acc": 0.61, "protected_balanced_acc": 0.143}
    (tmp_path / "results.json").write_text(json.dumps(r))
    text = "\n".join(evaluate_report(tmp_path))
    assert "chance 67.0% (chance is the share of the commonest class, 'nv'" in text
    assert "Balanced accuracy (mean per-class recall; 1/K for a victim that answers one class): clean 61.0%, " \
           "protected 14.3%." in text
    del r["chance_note"]  # balanced data: the sentence stays as it was
    (tmp_path / "results.json").write_text(json.dumps(r))
    text = "\n".join(evaluate_report(tmp_path))
    assert "chance 67.0%." in text and "Balanced accuracy" not in text


def test_on_an_imbalanced_split_protected_also_needs_balanced_accuracy_near_one_over_k():
    from unlearnable.audit.verify import verdict

    # 10 classes, commonest 29.4%: 38.8% is within 10 points of chance, but a balanced accuracy of 47.9% says the
    # victim still tells about half the classes apart (measured on the imbalanced photographs, bench/imbalanced.py)
    v, why = verdict(0.87, 0.388, 0.294, balanced=0.479, uniform=0.1)
    assert v == "not protected"
    assert why == ("protected accuracy 38.8% is within 10 points of chance (29.4%), but its balanced accuracy 47.9% "
                   "is more than 10 points above 1/K (10.0%): it still tells some of the less common classes apart")
    assert verdict(0.87, 0.388, 0.294, balanced=0.19, uniform=0.1)[0] == "protected"
    # a balanced split: one condition, as before (the balanced accuracy is the accuracy there)
    assert verdict(0.9, 0.19, 0.1, balanced=0.35, uniform=0.1)[0] == "protected"
    assert verdict(0.9, 0.19, 0.1)[0] == "protected"


def test_the_log_and_the_reports_word_the_told_apart_rule_alike(monkeypatch):
    from unlearnable.audit import verify as V
    from unlearnable.audit.classes import ABOVE_SHARE, learnt_rule
    from unlearnable.report.kinds import learnt_text

    said = []
    monkeypatch.setattr(V, "log", said.append)
    entry = {"classes_learnt": ["wm"], "learnt_above": LEARNT_ABOVE, "above_share": ABOVE_SHARE}
    V._say_learnt(entry)
    rule = learnt_rule()
    assert rule in said[0] and rule in learnt_text(entry)
    assert "15 points above the class's share" in rule
    # a file from before the share rule is read with its own, plain rule
    assert learnt_text({"classes_learnt": ["wm"], "learnt_above": 0.5}).count("share") == 0


def test_a_protected_tiles_verdict_from_max_pool_victims_alone_says_what_it_covers(monkeypatch):
    from unlearnable.audit import verify as V
    from unlearnable.protect import METHODS

    said = []
    monkeypatch.setattr(V, "log", said.append)
    tiles, noise = METHODS.get("tiles")(), METHODS.get("random")()
    V._say_scope({"verdict": "protected"}, ["smallcnn"], tiles)
    assert len(said) == 1 and "max-pool networks only (smallcnn)" in said[0]
    assert "--verify-victim smallcnn,resnet18" in said[0]
    # nothing to add: a strided victim was checked, the verdict is not "protected", or the method is not tiles
    V._say_scope({"verdict": "protected"}, ["smallcnn", "resnet18-narrow"], tiles)
    V._say_scope({"verdict": "not protected"}, ["vgg16"], tiles)
    V._say_scope({"verdict": "protected"}, ["smallcnn"], noise)
    assert len(said) == 1
