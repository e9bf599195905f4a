"""``scrub``: a student that stays close to the original on retain subjects and moves away from it on forget
subjects (Kurmanji et al., "Towards unbounded machine unlearning", NeurIPS 2023).

The teacher is the trained model, frozen. The student starts as a copy of it. Each sampled batch mixes retain and
forget patches in equal shares; the loss is SCRUB's min-max objective taken in one step,

    L = Dice+CE(retain) + α · KL(teacher ‖ student)(retain) − min(KL(teacher ‖ student)(forget), ln K)

with voxel-wise KL between the softmax outputs, averaged over voxels. The cap ``ln K`` (the KL that a uniform
student has from a confident teacher, roughly) keeps the max part bounded, as SCRUB's separate, early-stopped max
steps do. The calibrated stop ends it when the forget loss reaches the held-out spread.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..segment.train import PatchData, seg_loss
from .base import STRATEGIES, ForgetTask, Strategy


def voxel_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean voxel KL(teacher ‖ student) of logits ``(B, K, ...)`` → scalar."""
    return F.kl_div(student.log_softmax(1), teacher.log_softmax(1), log_target=True, reduction="none").sum(1).mean()


@STRATEGIES.register("scrub")
class Scrub(Strategy):
    """SCRUB: distil the original on retain subjects, diverge from it on forget subjects."""

    alpha: float = 1.0
    default_stop = "calibrated"

    def __init__(self) -> None:
        super().__init__()
        self.teacher: nn.Module | None = None

    def prepare(self, model: nn.Module, task: ForgetTask) -> nn.Module:
        self.teacher = copy.deepcopy(model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        return model

    def data(self, task: ForgetTask) -> PatchData:
        return task.both()

    def forget_share(self, task: ForgetTask) -> float:
        return 0.5

    def step_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        assert self.teacher is not None, "prepare() sets the teacher"
        s = model(x)
        with torch.no_grad():
            t = self.teacher(x)
        total = s.new_zeros(())
        keep = ~f
        if keep.any():
            total = total + seg_loss(s[keep], y[keep]) + self.alpha * voxel_kl(s[keep], t[keep])
        if f.any():
            total = total - voxel_kl(s[f], t[f]).clamp(max=math.log(s.shape[1]))
        return total
