"""bench/imbalanced.py: the imbalanced copies keep the shares asked for, and a run reports chance as the product
scores it (the commonest test class), beside 1/K and the balanced accuracy."""

from __future__ import annotations

import torch

from helpers import load_bench
from unlearnable.data import load

B = load_bench("imbalanced")


def test_the_copies_keep_the_shares_in_both_splits():
    ds = B.imbalanced(load("mni-tissue:n=200,test=80"), (1.0, 0.5, 0.25, 0.1))
    for split, top in (("train", 50), ("test", 20)):
        counts = torch.bincount(ds.split(split).labels, minlength=4).tolist()
        assert counts == [top, top // 2, round(top / 4), max(B.MIN_PER_CLASS, round(top / 10))]


def test_a_run_reports_commonest_class_chance():
    (row,) = B.run(["mni-tissue"], [7], epochs=1, source={"mni-tissue": "mni-tissue:n=200,test=80"})
    assert row["class_counts_test"] == [20, 9, 5, 5]  # 0.22 and 0.14 of 20, raised to MIN_PER_CLASS
    assert row["chance"] == round(20 / 39, 4) and row["uniform"] == 0.25
    assert 0 <= row["protected_balanced_acc"] <= 1 and 0 <= row["protected_acc"] <= 1
