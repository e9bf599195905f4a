"""Machine unlearning for 3D segmentation: one strategy per file, registered on :data:`STRATEGIES`."""

from __future__ import annotations

# imported for registration
from . import finetune, fix_decoder, max_loss, noisy_label, random_encoder, retrain, salun, scrub, sisa  # noqa: F401
from .base import STRATEGIES, ForgetTask, Strategy, run_strategy

__all__ = ["STRATEGIES", "ForgetTask", "Strategy", "run_strategy"]
