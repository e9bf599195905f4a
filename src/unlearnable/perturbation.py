"""Perturbation pieces every room may use: the quantised perturbation table and norm-ball steps.

Protections produce tables and take steps inside a budget; defences (adversarial training) take the same steps.
Both import them from here rather than from each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseTable:
    """Integer grey-level offsets: ``(K, C, H, W)`` per class, or ``(N, C, H, W)`` per sample id."""

    steps: torch.Tensor
    mode: str
    ids: tuple[str, ...] = ()


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample of ``(B, ...)``, shaped ``(B, 1, ...)`` for broadcasting, never below 1e-12."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def step(delta: torch.Tensor, grad: torch.Tensor, size: float, norm: str) -> torch.Tensor:
    """One steepest-ascent step along ``grad`` (pass ``-grad`` to descend): sign step for L-inf, unit-L2 otherwise."""
    if norm == "linf":
        return delta + size * grad.sign()
    return delta + size * grad / per_sample_norm(grad)


def project(delta: torch.Tensor, eps: float, norm: str, x: torch.Tensor | None = None) -> torch.Tensor:
    """Project ``delta`` ``(B, C, H, W)`` onto the ``eps`` ball; with ``x``, also keep ``x + delta`` in [0, 1]."""
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / per_sample_norm(delta)).clamp(max=1.0)
    if x is not None:
        delta = (x + delta).clamp(0.0, 1.0) - x
    return delta
