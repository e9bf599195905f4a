"""The training loop's last evaluation: one pass gives both the final accuracy and the confusion matrix."""

from __future__ import annotations

import pytest

from _efficacy import single_thread  # noqa: F401
from unlearnable.audit import evaluate as audit_evaluate
from unlearnable.train import loop
from unlearnable.train.loop import Recipe, train_classifier


def test_last_epoch_fills_the_confusion_matrix_its_accuracy_came_from(grey_set, rgb_set, monkeypatch):
    passes = []
    real = loop.confusion
    monkeypatch.setattr(loop, "confusion", lambda *a, **k: passes.append(1) or real(*a, **k))
    recipe = Recipe(model="smallcnn", epochs=2, batch_size=8, lr=0.05)
    _, hist = train_classifier(grey_set.images, grey_set.labels, 4, recipe,
                               eval_sets={"test": (grey_set.images, grey_set.labels)})
    assert len(passes) == 1  # the last epoch only; earlier epochs count correct answers alone
    cm = hist.eval_confusion["test"]
    assert len(cm) == 4 and sum(map(sum, cm)) == len(grey_set)
    assert [sum(row) for row in cm] == [int((grey_set.labels == k).sum()) for k in range(4)]
    assert sum(cm[k][k] for k in range(4)) / len(grey_set) == pytest.approx(hist.epochs[-1]["test_acc"])
    assert "test_acc" in hist.epochs[0]


def test_train_and_test_reuses_the_last_evaluation(grey_set, monkeypatch):
    """The victim's confusion matrix comes from the last epoch's pass, not from one more pass over the test split."""
    def no_extra_pass(*a, **k):
        raise AssertionError("an extra pass over the test split")
    monkeypatch.setattr(audit_evaluate, "confusion", no_extra_pass)
    acc, hist = audit_evaluate.train_and_test(grey_set, grey_set, Recipe(model="smallcnn", epochs=1, batch_size=8),
                                              "cpu")
    assert hist.test_confusion == hist.eval_confusion["test"]
    assert sum(hist.test_confusion[k][k] for k in range(4)) / len(grey_set) == pytest.approx(acc)


def test_a_finished_checkpoint_still_reports_its_confusion(grey_set, tmp_path):
    """Resuming a run whose checkpoint already holds every epoch evaluates nothing in the loop, so the matrix
    comes from one pass over the test split after it (the same numbers as the first run's)."""
    recipe = Recipe(model="smallcnn", epochs=1, batch_size=8)
    ck = tmp_path / "victim.ckpt"
    acc1, first = audit_evaluate.train_and_test(grey_set, grey_set, recipe, "cpu", checkpoint=ck)
    acc2, again = audit_evaluate.train_and_test(grey_set, grey_set, recipe, "cpu", checkpoint=ck)
    assert again.eval_confusion == {} and again.test_confusion == first.test_confusion and acc2 == acc1
