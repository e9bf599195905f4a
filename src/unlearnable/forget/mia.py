"""Membership inference for unlearning: per-subject features, a learned attack, bootstrap confidence intervals.

Features of a subject under a model (forget/metrics.py ``evaluate``): mean voxel cross-entropy, mean confidence
(max softmax probability), mean entropy, and the Dice of every scored class. Two attacks score each subject:

- **loss**: the loss-threshold attack (Yeom et al., 2018): score = −mean loss;
- **learned**: a logistic regression (standardised features, L2, ``C = 1``) trained to tell the model's *retain*
  subjects (members, label 1) from *held-out* subjects (label 0), i.e. the shadow-free attack an auditor holding
  the model and some held-out data can mount. It is evaluated leave-one-out over the held-out subjects: the attack
  fitted without held-out subject j scores j and every forget subject, and the AUC counts the (forget, j) pairs
  scored by that same attack. Neither side of a pair was in the attack's training data; scoring held-out subjects
  out of fold but forget subjects with one attack fitted on all held-out ones would bias the AUC towards 0 with
  a handful of subjects (a left-out negative looks like a member to a classifier fitted without it).

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
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    clf.fit(train_x, train_y)
    return clf.predict_proba(test_x)[:, 1]


def learned_wins(retain: np.ndarray, held: np.ndarray, forget: np.ndarray) -> np.ndarray:
    """Pairwise outcomes ``(H, F)`` of the learned attack on features ``(N, F_dim)``: entry (j, f) is 1 when the
    attack fitted without held-out subject j scores forget subject f above j, ½ on a tie, else 0."""
    x = np.concatenate([retain, held])
    y = np.concatenate([np.ones(len(retain)), np.zeros(len(held))])
    wins = np.empty((len(held), len(forget)))
    for j in range(len(held)):
        keep = np.ones(len(x), dtype=bool)
        keep[len(retain) + j] = False
        s = _fit_predict(x[keep], y[keep], np.concatenate([held[j:j + 1], forget]))
        wins[j] = (s[1:] > s[0]) + 0.5 * (s[1:] == s[0])
    return wins


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
        a, lo, hi = bootstrap_auc(learned_wins(fr, fh, ff), seed=seed)
    else:
        a, lo, hi = float("nan"), float("nan"), float("nan")
    out["learned"] = {"auc": a, "ci": [lo, hi]}
    out["n"] = {"retain": len(fr), "forget": len(ff), "held_out": len(fh)}
    return out
