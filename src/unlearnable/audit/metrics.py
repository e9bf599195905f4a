"""Moved to :mod:`unlearnable.data.quality` (protect and audit both use them); re-exported here for old imports."""

from __future__ import annotations

from ..data.quality import PerturbationStats, l2, linf, perturbation_stats, psnr, ssim

__all__ = ["PerturbationStats", "l2", "linf", "perturbation_stats", "psnr", "ssim"]
