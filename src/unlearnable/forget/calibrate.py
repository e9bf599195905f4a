"""The calibrated stop: end unlearning when the forget subjects look like subjects the model never saw.

A model that never saw a subject gives it a loss drawn from the held-out subjects' distribution; one that remembers
gives it a lower loss, one that over-forgets a higher one (and both stand out to a membership attack). Before the
first step the rule measures each forget and held-out subject's mean voxel cross-entropy on a fixed central
``patch``³ crop (one forward pass per subject; on the bench a check of 9 subjects costs about four training
steps), and again every ``every`` steps (and after steps 1, 2, 4, 8, … below that, since an aggressive strategy can
cross within its first steps). What it waits for depends on where the forget subjects start:

- **below the held-out band** (``mean(forget) < mean(held-out) − tolerance · spread``, spread = the held-out losses'
  standard deviation, floored at 5% of their mean): they are remembered and comparable with the held-out subjects,
  so the rule stops as soon as the forget mean enters the band from below — before it over-forgets. While the
  forget loss rises it also checks again halfway to where its trend would reach the band, so a fast strategy is
  caught near the crossing rather than at the next regular check;
- **inside or above the band**: either there is nothing to forget (the forget subjects already look unseen) or they
  are unlike every held-out subject (another contrast, other labels), so their loss level says nothing about whether
  the model remembers them. The rule then watches the forget loss *move*: forgetting raises it, and once it is
  forgotten it moves no more than the held-out subjects' does. At the first check after the learning-rate warm-up
  (``min_steps``; during the warm-up every loss barely moves) it stops if the forget mean has not risen, relative to
  the held-out mean, by more than a spread since the start: there was nothing to forget. Otherwise it stops at the
  first check at which the forget mean rose over the last two check intervals by at most ``plateau`` of itself or
  by the held-out mean's own movement, whichever is larger: the remembered outliers' loss has risen and levelled
  off. A strategy that pushes the forget subjects away (max-loss, SalUn, SCRUB) keeps raising
  their loss without levelling off, so the rule also stops once the forget mean is a spread above both its start
  and the held-out mean: beyond that they would stand out as worse than unseen data. With nothing to forget such a
  strategy still over-forgets by up to that spread, where ``finetune`` stops after its warm-up.

Any strategy can use it (``forget --stop calibrated``); ``max-loss`` (the default strategy), ``finetune``, SalUn and
SCRUB use it by default (``--stop auto``, when the model holds out subjects).
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


def scheduled(done: int, every: int) -> bool:
    """Whether a stop check is due after ``done`` steps: every ``every`` steps, and at the powers of two before
    that (an aggressive strategy can cross the held-out spread within its first few steps)."""
    return done % every == 0 or (done < every and done & (done - 1) == 0)


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
    """Stop when the forget subjects look unseen (module docstring); ``log`` holds every check, step 0 first."""

    forget: tuple[torch.Tensor, torch.Tensor]
    held: tuple[torch.Tensor, torch.Tensor]
    device: str = "cpu"
    every: int = 1
    tolerance: float = 1.0
    min_steps: int = 1
    plateau: float = 0.02
    name: str = "calibrated"
    log: list[dict[str, Any]] = field(default_factory=list)
    next_at: int | None = None  # an extra check, where the forget loss's trend would be halfway to the band

    def due(self, step: int) -> bool:
        """Whether to check after ``step`` steps: the regular schedule, or the extra check the trend asked for."""
        return scheduled(step, self.every) or (self.next_at is not None and step >= self.next_at)

    def measure(self, model: nn.Module, step: int) -> dict[str, Any]:
        lf = subject_losses(model, *self.forget, self.device)
        lh = subject_losses(model, *self.held, self.device)
        spread = max(float(lh.std()) if len(lh) > 1 else 0.0, 0.05 * float(lh.mean()))
        threshold = float(lh.mean()) - self.tolerance * spread
        return {"step": step, "forget_loss": float(lf.mean()), "held_loss": float(lh.mean()), "spread": spread,
                "threshold": threshold, "in_band": float(lf.mean()) >= threshold}

    def begin(self, model: nn.Module) -> None:
        """Measure the starting model (step 0) and pick the criterion; a resumed run keeps its logged start."""
        if not self.log:
            first = self.measure(model, 0)
            first.update(stop=False, mode="plateau" if first["in_band"] else "band")
            self.log.append(first)
        self.next_at = self.log[-1].get("next_at")  # a resumed run keeps the extra check it had asked for

    def check(self, model: nn.Module, step: int) -> bool:
        self.begin(model)  # a check without a start measures the model as it is now
        # the plateau is judged over the last two check intervals: a single quiet interval can be a pause on the
        # way up (seen on remembered outliers between two checks of a fine-tuning run)
        mode, prev = self.log[0]["mode"], self.log[-2] if len(self.log) > 1 else self.log[0]
        now = self.measure(model, step)
        if mode == "band":
            done = now["in_band"]
        else:
            rise = now["forget_loss"] - prev["forget_loss"]
            allowance = max(self.plateau * prev["forget_loss"], abs(now["held_loss"] - prev["held_loss"]))
            # moved: the forget mean rose, relative to the held-out mean, by more than a spread since the start
            start = self.log[0]
            moved = (now["forget_loss"] - now["held_loss"]) - (start["forget_loss"] - start["held_loss"]) > (
                self.tolerance * now["spread"])
            # the brake: risen a spread above both where they started and the held-out mean, they would stand out
            # as worse than unseen data (a strategy that pushes them away gets here without levelling off)
            ceiling = max(start["forget_loss"], now["held_loss"]) + self.tolerance * now["spread"]
            done = (step >= self.min_steps and (not moved or rise <= allowance)) or now["forget_loss"] >= ceiling
        self.log.append({**now, "stop": done, "mode": mode})
        self.next_at = None
        rate = (now["forget_loss"] - self.log[-2]["forget_loss"]) / max(1, step - self.log[-2]["step"])
        if mode == "band" and not done and rate > 0:
            # Checks are costly (one forward pass per subject, about four training steps on the bench), so the
            # regular ones are sparse; a strategy that raises the forget loss fast would cross the band between two
            # of them and over-forget. Checking again halfway to the predicted crossing closes in on it in a few
            # checks whatever the speed.
            self.next_at = step + max(1, int(0.5 * (now["threshold"] - now["forget_loss"]) / rate))
        self.log[-1]["next_at"] = self.next_at
        return done


def make_stop(strategy: Any, task: Any, total_steps: int, min_steps: int = 1) -> CalibratedStop | None:
    """The stop rule ``task.stop`` asks for (``auto``: the strategy's ``default_stop``), or None; ``min_steps`` is
    the learning-rate warm-up, during which the second mode does not stop for a loss that has not moved."""
    mode = strategy.default_stop if task.stop == "auto" else task.stop
    no_held = task.held_images is None or len(task.held_images) == 0
    # auto is the strategy's preference, not the user's demand: a model that holds out nobody runs its full budget
    if mode == "none" or (no_held and task.stop == "auto"):
        return None
    if no_held:
        raise UserError("--stop calibrated: needs held-out (test) subjects to calibrate against, and the model "
                        "holds out none (train it with --test-fraction > 0)")
    patch = task.cfg.patch
    # About 6 checks over the whole budget (after the powers of two before the first): a check costs about four
    # training steps on the bench (9 subjects' forward passes), and 12 of them added 75% to a 90-step finetune.
    every = max(1, total_steps // 6)
    return CalibratedStop(central_crop(task.forget_images, task.forget_labels, patch),
                          central_crop(task.held_images, task.held_labels, patch), task.device, every,
                          min_steps=min_steps)
