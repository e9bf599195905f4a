"""Membership inference for unlearning: per-subject features, a learned attack, bootstrap confidence intervals.

Features of a subject under a model (forget/metrics.py ``evaluate``): mean voxel cross-entropy, mean confidence
(max softmax probability), mean entropy, and the Dice of every scored class. Two attacks score each subject:

- **loss**: the loss-threshold attack (Yeom et al., 2018): score = −mean loss;
- **learned**: a logistic regression (standardised features, L2, ``C = 1``) trained to tell the model's *retain*
  subjects (members, label 1) from *held-out* subjects (label 0), i.e. the shadow-free attack an auditor holding
  the model and some held-out data can mount. Held-out subjects are scored out-of-fold (leave-one-out), so none is
  scored by an attack that was trained on it.

For each attack the AUC of telling **forget** subjects from held-out subjects is reported (0.5: they look like
data the model never saw; 1: they look like training data; 0: they stand out as *worse* than unseen data), with a
95% percentile bootstrap interval: forget and held-out subjects are resampled with replacement (1000 times, seeded)
and the AUC recomputed; the learned attack is not refitted per resample (the interval is over the evaluation
subjects, the dominant source of noise with a handful of subjects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import auc


def _fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(train_y.tolist())) < 2:
        return np.full(len(test_x), 0.5)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    clf.fit(train_x, train_y)
    return clf.predict_proba(test_x)[:, 1]


def learned_scores(retain: np.ndarray, held: np.ndarray, forget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Membership scores of forget and held-out subjects ``(N, F)`` features; held-out ones out-of-fold."""
    x = np.concatenate([retain, held])
    y = np.concatenate([np.ones(len(retain)), np.zeros(len(held))])
    f_scores = _fit_predict(x, y, forget)
    h_scores = np.empty(len(held))
    for j in range(len(held)):
        keep = np.ones(len(x), dtype=bool)
        keep[len(retain) + j] = False
        h_scores[j] = _fit_predict(x[keep], y[keep], held[j:j + 1])[0]
    return f_scores, h_scores


def bootstrap_auc(pos: Sequence[float], neg: Sequence[float], n: int = 1000, seed: int = 0,
                  ) -> tuple[float, float, float]:
    """AUC of ``pos`` vs ``neg`` scores and its 95% percentile bootstrap interval (both sides resampled)."""
    p, q = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    point = auc(p.tolist(), q.tolist())
    if not len(p) or not len(q):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = [auc(p[rng.integers(0, len(p), len(p))].tolist(), q[rng.integers(0, len(q), len(q))].tolist())
            for _ in range(n)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return point, float(lo), float(hi)


def membership(retain: dict[str, Any], forget: dict[str, Any], held: dict[str, Any], seed: int = 0,
               ) -> dict[str, Any]:
    """Both attacks on ``evaluate`` results of the three groups: ``{"loss": {"auc", "ci"}, "learned": {...}}``."""
    out: dict[str, Any] = {}
    a, lo, hi = bootstrap_auc([-x for x in forget["loss"]], [-x for x in held["loss"]], seed=seed)
    out["loss"] = {"auc": a, "ci": [lo, hi]}
    fr, fh, ff = (np.asarray(g["features"], dtype=float) for g in (retain, held, forget))
    if len(fr) and len(fh) and len(ff):
        f_scores, h_scores = learned_scores(fr, fh, ff)
        a, lo, hi = bootstrap_auc(f_scores.tolist(), h_scores.tolist(), seed=seed)
    else:
        a, lo, hi = float("nan"), float("nan"), float("nan")
    out["learned"] = {"auc": a, "ci": [lo, hi]}
    out["n"] = {"retain": len(fr), "forget": len(ff), "held_out": len(fh)}
    return out
