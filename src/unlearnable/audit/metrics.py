"""Moved to :mod:`unlearnable.data.quality` (protect and audit both use them) and, for the validity rule,
:mod:`unlearnable.audit.validity`; re-exported here for old imports."""

from __future__ import annotations

from ..data.quality import PerturbationStats, l2, linf, perturbation_stats, psnr, ssim
from .validity import EXIT_INCONCLUSIVE, baseline_margin, baseline_valid

__all__ = ["EXIT_INCONCLUSIVE", "PerturbationStats", "baseline_margin", "baseline_valid", "l2", "linf",
           "perturbation_stats", "psnr", "ssim"]
