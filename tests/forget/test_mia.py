from __future__ import annotations

import numpy as np

from unlearnable.forget.metrics import auc
from unlearnable.forget.mia import bootstrap_auc, learned_wins, membership, pair_wins


def _group(rng: np.random.Generator, n: int, loss: float) -> dict:
    """Per-subject features as evaluate() returns them: loss, confidence, entropy, per-class Dice (3 classes)."""
    f = np.column_stack([rng.normal(loss, 0.02, n), rng.normal(1 - loss, 0.02, n), rng.normal(loss, 0.02, n),
                         rng.normal(0.8, 0.02, (n, 3))])
    return {"loss": f[:, 0].tolist(), "features": f.tolist()}


def test_learned_attack_tells_members_from_non_members() -> None:
    rng = np.random.default_rng(0)
    retain, held = _group(rng, 12, 0.2), _group(rng, 6, 0.5)
    remembered = membership(retain, _group(rng, 3, 0.2), held)  # forget subjects still look like training data
    forgotten = membership(retain, _group(rng, 3, 0.5), held)  # they look like held-out data
    assert remembered["learned"]["auc"] == 1.0 and remembered["loss"]["auc"] == 1.0
    assert forgotten["learned"]["auc"] < 0.9 and forgotten["learned"]["ci"][0] < 0.5
    assert remembered["n"] == {"retain": 12, "forget": 3, "held_out": 6}


def test_learned_attack_is_not_biased_when_forget_and_held_out_look_alike() -> None:
    """Forget and held-out subjects from one distribution: each pair is scored by one attack that saw neither, so
    the AUC sits near 0.5 (scoring held-out subjects out of fold against an all-data fit would push it to 0)."""
    rng = np.random.default_rng(1)
    aucs = []
    for _ in range(8):
        retain = np.asarray(_group(rng, 15, 0.3)["features"])
        held, forget = (np.asarray(_group(rng, k, 0.32)["features"]) for k in (6, 3))
        wins = learned_wins(retain, held, forget)
        assert wins.shape == (6, 3) and set(np.unique(wins)) <= {0.0, 0.5, 1.0}
        aucs.append(wins.mean())
    assert 0.3 < np.mean(aucs) < 0.7, aucs


def test_bootstrap_interval_contains_the_point_and_narrows_with_more_subjects() -> None:
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(0.3, 1, 3).tolist(), rng.normal(0, 1, 4).tolist()
    small = bootstrap_auc(pair_wins(pos, neg))
    assert small[0] == auc(pos, neg)  # the point estimate is the Mann-Whitney AUC
    large = bootstrap_auc(pair_wins(rng.normal(0.3, 1, 300).tolist(), rng.normal(0, 1, 400).tolist()), n=200)
    for a, lo, hi in (small, large):
        assert lo <= a <= hi
    assert large[2] - large[1] < small[2] - small[1]
