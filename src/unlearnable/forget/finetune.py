"""``finetune``: keep training the trained model on the retain subjects only (catastrophic forgetting).

Training on retain subjects lets what the model learnt only from the forget subjects fade, so their loss drifts up
towards the held-out subjects'; it never pushes them beyond that (there is no ascent term), so it cannot make them
stand out as worse than unseen data. By default (``--stop auto``) the calibrated stop ends it (forget/calibrate.py):
a model that never memorised them stops at the first check after the warm-up, one that did keeps training until
their loss reaches the held-out band, or, for subjects unlike the held-out ones, until it has risen and levelled
off. It is slow to forget what nothing in the retain data contradicts: on bench/forget.py's quirked phantoms its
whole budget leaves the forget subjects remembered, which is why ``max-loss`` is the default (docs/unlearning.md).
"""

from __future__ import annotations

from .base import STRATEGIES, Strategy


@STRATEGIES.register("finetune")
class Finetune(Strategy):
    """Continue training on retain subjects only, stopped by the calibrated rule."""

    default_stop = "calibrated"
