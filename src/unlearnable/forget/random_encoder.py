"""``random-encoder``: re-initialise the encoder, keep the decoder, train on the retain subjects.

Whatever the encoder memorised about the forget subjects is discarded with its weights; the kept decoder gives the
retraining a head start over ``retrain`` (that is the hoped-for saving).
"""

from __future__ import annotations

import torch.nn as nn

from .base import STRATEGIES, ForgetTask, Strategy, reinitialise


@STRATEGIES.register("random-encoder")
class RandomEncoder(Strategy):
    """Fresh random encoder weights, trained with the kept decoder on retain subjects."""

    def prepare(self, model: nn.Module, task: ForgetTask) -> nn.Module:
        reinitialise(model.encoder(), task.cfg.seed + 104729)
        return model
