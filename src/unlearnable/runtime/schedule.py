"""Learning-rate rules shared by every trainer: batch-size scaling and warm-up + cosine/constant schedules.

``lr`` is given for ``base_batch`` samples per step and scaled to the global batch by ``rule`` (linear: Goyal et
al. 2017; sqrt: Krizhevsky 2014).
"""

from __future__ import annotations

import math

RULES = ("none", "linear", "sqrt")
SCHEDULES = ("cosine", "constant")


def scaled_lr(lr: float, batch_size: int, base_batch: int, rule: str) -> float:
    """``lr`` at ``base_batch`` scaled to a global ``batch_size`` by ``rule`` (none | linear | sqrt)."""
    ratio = batch_size / base_batch
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def scaling_note(lr: float, base_batch: int, rule: str) -> str:
    """How the peak rate came from ``lr``, for the logs: ``"linear scaling of 0.1 @ 128"``, or ``"not scaled with
    the batch"`` under the rule ``none``."""
    return "not scaled with the batch" if rule == "none" else f"{rule} scaling of {lr} @ {base_batch}"


def lr_at(peak: float, step: int, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0,
          schedule: str = "cosine") -> float:
    """Learning rate at ``step`` (0-based): linear warm-up to ``peak``, then cosine (or constant) to the end."""
    total = epochs * steps_per_epoch
    warm = int(warmup_epochs * steps_per_epoch)
    if step < warm:
        return peak * (step + 1) / warm
    if schedule == "constant":
        return peak
    t = (step - warm) / max(1, total - warm)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, t)))
