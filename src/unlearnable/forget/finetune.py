"""``finetune``: keep training the trained model on the retain subjects only (catastrophic forgetting)."""

from __future__ import annotations

from .base import STRATEGIES, Strategy


@STRATEGIES.register("finetune")
class Finetune(Strategy):
    """Continue training on retain subjects only."""
