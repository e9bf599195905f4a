"""``salun``: saliency-masked random-label unlearning (Fan et al., "SalUn", ICLR 2024).

1. Weight saliency: the gradient of the segmentation loss on the forget subjects (true labels) at the trained
   weights, ``g = ∇_θ L_f(θ_o)``; the mask keeps the weights whose ``|g|`` is in the top ``keep`` share over the whole
   model (SalUn's threshold, Eq. 7, with the median: ``keep = 0.5``). Only these weights are updated.
2. Random labelling with retain replay (SalUn Eq. 8): each sampled batch mixes forget patches, whose voxel labels are
   replaced by uniformly random classes, and retain patches with their true labels, in equal shares.
3. The calibrated stop ends it as soon as the forget subjects' loss reaches the held-out spread.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..segment.train import PatchData, crop_patches, seg_loss
from .base import STRATEGIES, ForgetTask, Strategy
from .noisy_label import corrupt_labels


def saliency_masks(model: nn.Module, task: ForgetTask, keep: float, batches: int = 4) -> dict[str, torch.Tensor]:
    """Boolean mask per trainable parameter: True where ``|∇ L_forget|`` is in the top ``keep`` share."""
    data = PatchData(task.forget_images, task.forget_labels, torch.ones(len(task.forget_images), dtype=torch.bool))
    model.zero_grad(set_to_none=True)
    was = model.training
    model.eval()  # saliency of the trained function, not of batch statistics
    n = len(data)
    for b in range(batches):  # a few random crops of every forget subject
        x, y, _ = crop_patches(data, list(range(n)), task.cfg.patch, task.cfg.seed + 31, b, 1)
        (seg_loss(model(x.to(task.device)), y.to(task.device)) / batches).backward()
    model.train(was)
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    mags = torch.cat([p.grad.detach().abs().flatten().cpu() for _, p in named])
    # kthvalue, not quantile: quantile refuses tensors above 16M elements (Med3D ResNet-50 has more weights)
    k = max(1, int(round((1.0 - keep) * len(mags))))
    threshold = float(mags.kthvalue(k).values) if k < len(mags) else float(mags.max())
    masks = {k_: (p.grad.detach().abs() >= threshold) for k_, p in named}
    model.zero_grad(set_to_none=True)
    return masks


@STRATEGIES.register("salun")
class SalUn(Strategy):
    """SalUn: random-label updates on the gradient-salient half of the weights, with retain replay."""

    keep: float = 0.5
    default_stop = "calibrated"

    def __init__(self) -> None:
        super().__init__()
        self.masks: dict[str, torch.Tensor] = {}
        self.params: dict[str, nn.Parameter] = {}

    def prepare(self, model: nn.Module, task: ForgetTask) -> nn.Module:
        self.masks = saliency_masks(model, task, self.keep)
        self.params = dict(model.named_parameters())
        return model

    def data(self, task: ForgetTask) -> PatchData:
        return task.both(corrupt_labels(task.forget_labels, task.num_classes, task.cfg.seed + 7919))

    def forget_share(self, task: ForgetTask) -> float:
        return 0.5

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, forget: torch.Tensor) -> torch.Tensor:
        return seg_loss(logits, labels)

    def after_backward(self, model: nn.Module) -> None:
        # Adam leaves a weight untouched while its gradient (hence both moments) stays exactly zero
        for k, m in self.masks.items():
            g = self.params[k].grad
            if g is not None:
                g.mul_(m)
