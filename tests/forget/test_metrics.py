from __future__ import annotations

import math

import torch

from unlearnable.forget.metrics import auc, dice_per_class, evaluate, headline, mae, mia_auc
from unlearnable.forget.record import ID_PURPOSE, keyed
from unlearnable.forget.run import add_comparisons
from unlearnable.protect.keys import Key


def test_dice_by_hand() -> None:
    target = torch.tensor([[[0, 1, 1, 2]]])
    pred = torch.tensor([[[0, 1, 2, 2]]])
    d = dice_per_class(pred, target, 4)
    # class 0: 2*1/(1+1)=1; class 1: 2*1/(1+2)=2/3; class 2: 2*1/(2+1)=2/3; class 3 absent from both: 1
    assert torch.allclose(d, torch.tensor([1.0, 2 / 3, 2 / 3, 1.0]))
    assert dice_per_class(torch.tensor([[[3]]]), torch.tensor([[[0]]]), 4)[3] == 0  # predicted but absent


def test_mae_by_hand() -> None:
    target = torch.tensor([[[1, 2]]])
    probs = torch.zeros(3, 1, 1, 2)
    probs[:, 0, 0, 0] = torch.tensor([0.2, 0.8, 0.0])  # voxel 0, true class 1
    probs[:, 0, 0, 1] = torch.tensor([0.0, 0.5, 0.5])  # voxel 1, true class 2
    # scored classes 1, 2: |0.8-1| + |0-0| + |0.5-0| + |0.5-1| = 1.2 over 4 terms
    assert math.isclose(mae(probs, target, [1, 2]), 0.3, rel_tol=1e-6)


def test_auc_and_mia_by_hand() -> None:
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1], [2]) == 0.0 and auc([1, 2], [2]) == 0.25
    assert mia_auc([0.1, 0.2], [0.5, 0.9]) == 1.0  # members have the lower loss: the attack wins
    assert math.isnan(auc([], [1.0]))


def test_headline_and_comparisons() -> None:
    def m(r, f, t):
        return {"retain": {"dice": r, "mae": 0.1}, "forget": {"dice": f, "mae": 0.1}, "test": {"dice": t, "mae": 0.1}}

    res = {"original": {**m(0.8, 0.8, 0.7), "mia_auc": 0.9}, "strategies": {
        "retrain": {"5": {**m(0.75, 0.7, 0.7), "mia_auc": 0.5, "time_s": 10.0, "cpu_s": 8.0}},
        "noisy-label": {"5": {**m(0.6, 0.08, 0.5), "mia_auc": 0.1, "time_s": 2.0, "cpu_s": 0.4}}}}
    h = headline(res["original"], res["strategies"]["noisy-label"]["5"])
    assert math.isclose(h["forget_drop_pct"], 90.0) and math.isclose(h["retain_kept_pct"], 75.0)
    add_comparisons(res)
    r = res["strategies"]["noisy-label"]["5"]
    assert math.isclose(r["gap_to_retrain"]["forget_dice"], 0.62)
    assert math.isclose(r["gap_to_retrain"]["test_dice"], 0.2)
    assert math.isclose(r["time_rel_retrain"], 0.2) and res["retrain_mia_auc"] == {"5": 0.5}
    assert math.isclose(r["cpu_rel_retrain"], 0.05)  # CPU time relative to retrain's, beside wall time


class _Oracle(torch.nn.Module):
    """Predicts the stored label map with confidence 1 (logits ±large), for an exact evaluate() check."""

    def __init__(self, labels: torch.Tensor, k: int) -> None:
        super().__init__()
        self.labels, self.k, self.i = labels, k, 0
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(self.labels[self.i], self.k).movedim(-1, 0)[None].float()
        self.i += 1
        return onehot * 40.0 - 20.0


def test_evaluate_on_a_perfect_model(tiny_subjects) -> None:
    labels = tiny_subjects.labels[:2]
    r = evaluate(_Oracle(labels, 4), tiny_subjects.images[:2], labels, (1, 2, 3), patch=16)
    assert math.isclose(r["dice"], 1.0) and r["mae"] < 1e-6 and max(r["loss"]) < 1e-6


def test_ids_are_keyed() -> None:
    a, b = Key.new(), Key.new()
    assert keyed(a, ID_PURPOSE, "07") != keyed(a, ID_PURPOSE, "7") and len(keyed(a, ID_PURPOSE, "07")) == 64
    assert keyed(a, ID_PURPOSE, "07") == keyed(a, ID_PURPOSE, "07") != keyed(b, ID_PURPOSE, "07")  # no key, no match
