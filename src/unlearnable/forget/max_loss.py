"""``max-loss``: gradient ascent on the forget subjects, descent on the retain subjects (NegGrad+).

Loss per batch: ``L_seg(retain patches) − α · min(CE(forget patches), bound)``. The ascent term is capped at
``bound = 2 ln K`` (twice the cross-entropy of a uniform guess): without the cap gradient ascent diverges and takes the
whole model with it (Kurmanji et al., 2023, discuss this failure of plain NegGrad). ``--stop auto`` stops it with the
calibrated rule (forget/calibrate.py); ``--stop none`` runs the seed study's whole budget.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..segment.train import PatchData, seg_loss
from .base import STRATEGIES, ForgetTask, Strategy


@STRATEGIES.register("max-loss")
class MaxLoss(Strategy):
    """Gradient ascent on forget subjects (capped) plus the usual loss on retain subjects; calibrated stop."""

    alpha: float = 1.0
    # Ascent raises the forget loss fastest of all strategies and, run for its whole budget, over-forgets; stopped
    # where the forget subjects' loss reaches the held-out subjects' it lands closest to retrain (docs/unlearning.md)
    default_stop = "calibrated"

    def data(self, task: ForgetTask) -> PatchData:
        return task.both()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, forget: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        keep = ~forget
        if keep.any():
            total = total + seg_loss(logits[keep], labels[keep])
        if forget.any():
            ce = F.cross_entropy(logits[forget], labels[forget])
            total = total - self.alpha * ce.clamp(max=2.0 * math.log(logits.shape[1]))
        return total
