"""``retrain``: train a fresh model on the retain subjects only — exact unlearning, the gold standard.

Its scores are what the other strategies are measured against (gap to ``retrain``), and its wall time is the unit of
their cost. Horizons count epochs from scratch, like the other strategies' count epochs of unlearning.
"""

from __future__ import annotations

from .base import STRATEGIES, Strategy


@STRATEGIES.register("retrain")
class Retrain(Strategy):
    """A fresh model trained from scratch on retain subjects (exact unlearning)."""

    from_scratch = True
    guarantee = "exact"
