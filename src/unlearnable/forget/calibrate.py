"""The calibrated stop: end unlearning when the forget subjects look like held-out subjects to the model.

A model that never saw a subject gives it a loss drawn from the held-out subjects' distribution; one that remembers
gives it a lower loss, one that over-forgets a higher one (and both stand out to a membership attack). Every
``every`` steps (and after steps 1, 2, 4, 8, … below that, since an aggressive strategy can cross within its first
steps) the rule computes each forget and held-out subject's mean voxel cross-entropy on a fixed central
``patch``³ crop (one forward pass per subject, so a check costs about one training step per four subjects) and
stops as soon as

    mean(forget loss) ≥ mean(held-out loss) − tolerance · spread(held-out loss)

where spread is the held-out losses' standard deviation (floored at 5% of their mean so that near-identical
held-out subjects still leave a band). The forget mean is then inside the held-out spread, approached from below,
so the strategy stops before it over-forgets. Any strategy can use it (``forget --stop calibrated``); ``finetune``
(the default strategy), SalUn and SCRUB use it by default (``--stop auto``, when the model holds out subjects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError


def central_crop(images: torch.Tensor, labels: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The central ``patch``³ crop (zero-padded when smaller): ``(N, C, D, H, W)`` uint8 → float in [0, 1]."""
    pad = [max(0, patch - d) for d in images.shape[2:]]
    if any(pad):
        spec = [v for p in reversed(pad) for v in (0, p)]
        images, labels = F.pad(images, spec), F.pad(labels, spec)
    sl = tuple(slice((d - patch) // 2, (d - patch) // 2 + patch) for d in images.shape[2:])
    return images[(slice(None), slice(None), *sl)].float().div(255.0), labels[(slice(None), *sl)].long()


@torch.no_grad()
def subject_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> torch.Tensor:
    """Mean voxel cross-entropy per subject: x ``(N, C, p, p, p)``, y ``(N, p, p, p)`` → ``(N,)``."""
    was = model.training
    model.eval()
    try:
        out = [F.cross_entropy(model(x[i:i + 1].to(device)), y[i:i + 1].to(device)).cpu() for i in range(len(x))]
    finally:
        model.train(was)
    return torch.stack(out)


@dataclass
class CalibratedStop:
    """Stop when the forget subjects' mean loss reaches the held-out subjects' spread (module docstring)."""

    forget: tuple[torch.Tensor, torch.Tensor]
    held: tuple[torch.Tensor, torch.Tensor]
    device: str = "cpu"
    every: int = 1
    tolerance: float = 1.0
    name: str = "calibrated"
    log: list[dict[str, Any]] = field(default_factory=list)

    def check(self, model: nn.Module, step: int) -> bool:
        lf = subject_losses(model, *self.forget, self.device)
        lh = subject_losses(model, *self.held, self.device)
        spread = max(float(lh.std()) if len(lh) > 1 else 0.0, 0.05 * float(lh.mean()))
        threshold = float(lh.mean()) - self.tolerance * spread
        done = float(lf.mean()) >= threshold
        self.log.append({"step": step, "forget_loss": float(lf.mean()), "held_loss": float(lh.mean()),
                         "threshold": threshold, "stop": done})
        return done


def make_stop(strategy: Any, task: Any, total_steps: int) -> CalibratedStop | None:
    """The stop rule ``task.stop`` asks for (``auto``: the strategy's ``default_stop``), or None."""
    mode = strategy.default_stop if task.stop == "auto" else task.stop
    no_held = task.held_images is None or len(task.held_images) == 0
    # auto is the strategy's preference, not the user's demand: a model that holds out nobody runs its full budget
    if mode == "none" or (no_held and task.stop == "auto"):
        return None
    if no_held:
        raise UserError("--stop calibrated: needs held-out (test) subjects to calibrate against, and the model "
                        "holds out none (train it with --test-fraction > 0)")
    patch = task.cfg.patch
    # About 12 checks over the whole budget: often enough to stop near the crossing, rarely enough that the checks
    # cost a fraction of the training they watch.
    every = max(1, total_steps // 12)
    return CalibratedStop(central_crop(task.forget_images, task.forget_labels, patch),
                          central_crop(task.held_images, task.held_labels, patch), task.device, every)
