"""Pictures people look at: image grids, accuracy curves, bar charts (matplotlib, Agg, PNG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import pyplot

plt = pyplot()


def _show(ax: Any, img: np.ndarray, title: str | None = None) -> None:
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def image_grid(clean: torch.Tensor, rows: Mapping[str, torch.Tensor], path: str | Path, amplify: float = 10.0,
               labels: Sequence[str] | None = None) -> Path:
    """Columns = samples; rows = clean, then each protected version and its amplified difference.

    The difference row shows ``128 + amplify * (protected - clean)`` so small perturbations become visible.
    """
    n = clean.shape[0]
    names = ["clean"]
    imgs: list[np.ndarray] = [clean.numpy()]
    for name, prot in rows.items():
        diff = (prot.float() - clean.float()) * amplify + 128
        names += [name, f"{name} diff x{amplify:g}"]
        imgs += [prot.numpy(), diff.clamp(0, 255).to(torch.uint8).numpy()]
    fig, axes = plt.subplots(len(imgs), n, figsize=(1.2 * n, 1.25 * len(imgs)), squeeze=False)
    for r, (name, batch) in enumerate(zip(names, imgs)):
        for c in range(n):
            _show(axes[r][c], batch[c], (labels[c] if labels is not None and r == 0 else None))
        axes[r][0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_curves(runs: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path,
                    title: str = "clean test accuracy while training", chance: float | None = None) -> Path:
    """One line per run: clean test accuracy after each epoch (dashed: training accuracy)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (name, rows) in enumerate(runs.items()):
        ep = [r["epoch"] for r in rows]
        color = f"C{i}"
        ax.plot(ep, [100 * r["test_acc"] for r in rows], "-o", ms=3, color=color, label=f"{name} (test)")
        ax.plot(ep, [100 * r["train_acc"] for r in rows], "--", color=color, alpha=0.5, label=f"{name} (train)")
    if chance is not None:
        ax.axhline(100 * chance, color="gray", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_bars(values: Mapping[str, float], path: str | Path, title: str = "clean test accuracy",
                  chance: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(values), 3.2))
    names = list(values)
    ax.bar(names, [100 * values[n] for n in names], color=[f"C{i}" for i in range(len(names))])
    for i, n in enumerate(names):
        ax.text(i, 100 * values[n] + 1.5, f"{100 * values[n]:.1f}", ha="center", fontsize=8)
    if chance is not None:
        ax.axhline(100 * chance, color="gray", lw=0.8, ls=":")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
