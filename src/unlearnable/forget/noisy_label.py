"""``noisy-label``: train on retain subjects with their true labels and forget subjects with corrupted ones.

The best strategy of the seed study ("To forget is to preserve", MRBrainS18). Corruption here replaces every voxel
label of a forget subject by a class drawn uniformly at random (seeded), so the only thing the forget images can
teach is noise; the retain subjects keep the segmentation alive.
"""

from __future__ import annotations

import torch

from ..segment.train import PatchData
from .base import STRATEGIES, ForgetTask, Strategy


def corrupt_labels(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Uniformly random labels with the shape of ``labels`` ``(N, D, H, W)``, deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, labels.shape, generator=g, dtype=torch.long)


@STRATEGIES.register("noisy-label")
class NoisyLabel(Strategy):
    """Retain subjects with true labels, forget subjects with uniformly random labels."""

    def data(self, task: ForgetTask) -> PatchData:
        return task.both(corrupt_labels(task.forget_labels, task.num_classes, task.cfg.seed + 7919))
