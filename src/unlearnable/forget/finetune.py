"""``finetune``: keep training the trained model on the retain subjects only (catastrophic forgetting).

Training on retain subjects lets what the model learnt only from the forget subjects fade, so their loss drifts up
towards the held-out subjects'; it never pushes them beyond that (there is no ascent term), so it cannot make them
stand out as worse than unseen data. By default (``--stop auto``) the calibrated stop ends it as soon as the forget
subjects' loss is inside the held-out spread: a model that never memorised them stops after its first check,
one that did keeps training up to its step budget.
"""

from __future__ import annotations

from .base import STRATEGIES, Strategy


@STRATEGIES.register("finetune")
class Finetune(Strategy):
    """Continue training on retain subjects only, stopped by the calibrated rule."""

    default_stop = "calibrated"
