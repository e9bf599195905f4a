"""Membership inference for unlearning: per-subject features, a learned attack, bootstrap confidence intervals.

Features of a subject under a model (forget/metrics.py ``evaluate``): mean voxel cross-entropy, mean confidence
(max softmax probability), mean entropy, and the Dice of every scored class. Two attacks score each subject:

- **loss**: the loss-threshold attack (Yeom et al., 2018): score = −mean loss;
- **learned**: a logistic regression (standardised features, L2, ``C = 1``, classes weighted to balance) trained to
  tell the model's *retain* subjects (members, label 1) from *held-out* subjects (label 0), i.e. the shadow-free
  attack an auditor holding the model and some held-out data can mount. The held-out subjects are split into a
  **reference** part, used only to train the attack, and an **evaluation** part, scored with the forget subjects by
  that same attack; the parts swap (``folds`` folds, each held-out subject evaluated once per split) and the split is
  redrawn ``repeats`` times, each pair's outcome averaged over them. No subject that is scored was in the attack's
  training data, and no attack is fitted per scored subject (leave-one-out on the evaluated set), so a forget subject
  and an evaluation subject are exchangeable to the attack whenever the model treats them alike: a model that never
  saw the forget subjects scores near 0.5 on average. Redrawing the split averages out the luck of one split; the
  luck of which few subjects are forgotten remains, and the bootstrap interval below shows it.

For each attack the AUC of telling **forget** subjects from held-out subjects is reported (0.5: they look like
data the model never saw; 1: they look like training data; 0: they stand out as *worse* than unseen data), with a
95% percentile bootstrap interval: forget and held-out subjects are resampled with replacement (1000 times, seeded)
and the AUC recomputed from the same pairwise comparisons; the learned attack is not refitted per resample (the
interval is over the evaluation subjects, the dominant source of noise with a handful of subjects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(train_y.tolist())) < 2:
        return np.full(len(test_x), 0.5)
    # balanced: members usually outnumber the reference subjects several times over
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000))
    clf.fit(train_x, train_y)
    return clf.predict_proba(test_x)[:, 1]


def learned_wins(retain: np.ndarray, held: np.ndarray, forget: np.ndarray, folds: int = 2, repeats: int = 10,
                 seed: int = 0) -> np.ndarray:
    """Pairwise outcomes ``(H, F)`` of the learned attack on features ``(N, F_dim)``, cross-fitted over held-out
    subjects (module docstring): entry (j, f) is the share of splits in which the attack trained on the retain
    subjects and the reference part that excludes j scores forget subject f above j (a tie counts ½)."""
    h = len(held)
    k = max(1, min(folds, h - 1))  # at least one reference subject per fold (one held-out subject: no reference)
    wins = np.zeros((h, len(forget)))
    rng = np.random.default_rng([seed, 31])
    for _ in range(repeats):
        for part in np.array_split(rng.permutation(h), k):
            ref = np.setdiff1d(np.arange(h), part)
            x = np.concatenate([retain, held[ref]])
            y = np.concatenate([np.ones(len(retain)), np.zeros(len(ref))])
            s = _fit_predict(x, y, np.concatenate([held[part], forget]))
            sh, sf = s[:len(part), None], s[None, len(part):]
            wins[part] += (sf > sh) + 0.5 * (sf == sh)
    return wins / repeats


def pair_wins(pos: Sequence[float], neg: Sequence[float]) -> np.ndarray:
    """Pairwise outcomes ``(len(neg), len(pos))`` of one fixed score: 1 where pos > neg, ½ on a tie."""
    p, q = np.asarray(pos, dtype=float)[None, :], np.asarray(neg, dtype=float)[:, None]
    return (p > q) + 0.5 * (p == q)


def bootstrap_auc(wins: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """AUC (mean of pairwise outcomes ``(H, F)``) and its 95% percentile bootstrap interval, resampling the
    held-out rows and the forget columns with replacement."""
    if wins.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    h, f = wins.shape
    vals = [wins[np.ix_(rng.integers(0, h, h), rng.integers(0, f, f))].mean() for _ in range(n)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(wins.mean()), float(lo), float(hi)


def membership(retain: dict[str, Any], forget: dict[str, Any], held: dict[str, Any], seed: int = 0,
               ) -> dict[str, Any]:
    """Both attacks on ``evaluate`` results of the three groups: ``{"loss": {"auc", "ci"}, "learned": {...}}``."""
    out: dict[str, Any] = {}
    a, lo, hi = bootstrap_auc(pair_wins([-x for x in forget["loss"]], [-x for x in held["loss"]]), seed=seed)
    out["loss"] = {"auc": a, "ci": [lo, hi]}
    fr, fh, ff = (np.asarray(g["features"], dtype=float) for g in (retain, held, forget))
    if len(fr) and len(fh) and len(ff):
        a, lo, hi = bootstrap_auc(learned_wins(fr, fh, ff, seed=seed), seed=seed)
    else:
        a, lo, hi = float("nan"), float("nan"), float("nan")
    out["learned"] = {"auc": a, "ci": [lo, hi]}
    out["n"] = {"retain": len(fr), "forget": len(ff), "held_out": len(fh)}
    return out
