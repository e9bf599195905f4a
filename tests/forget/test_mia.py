from __future__ import annotations

import numpy as np

from unlearnable.forget.mia import bootstrap_auc, learned_scores, membership


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


def test_held_out_scores_are_out_of_fold() -> None:
    rng = np.random.default_rng(1)
    retain, held = np.asarray(_group(rng, 10, 0.2)["features"]), np.asarray(_group(rng, 5, 0.5)["features"])
    f, h = learned_scores(retain, held, held)  # the same subjects as "forget" (in-fold) and as held-out (out of fold)
    assert f.shape == (5,) and h.shape == (5,) and not np.allclose(f, h)


def test_bootstrap_interval_contains_the_point_and_narrows_with_more_subjects() -> None:
    rng = np.random.default_rng(2)
    small = bootstrap_auc(rng.normal(0.3, 1, 3).tolist(), rng.normal(0, 1, 4).tolist())
    large = bootstrap_auc(rng.normal(0.3, 1, 300).tolist(), rng.normal(0, 1, 400).tolist(), n=200)
    for a, lo, hi in (small, large):
        assert lo <= a <= hi
    assert large[2] - large[1] < small[2] - small[1]
