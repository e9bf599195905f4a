"""Figures of the audit commands: the method x defence heat map and accuracy vs batch size (PNG)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import pyplot


def heatmap(rows: Sequence[str], cols: Sequence[str], grid: Sequence[Sequence[float]], path: Path) -> Path:
    """A rows x defences heat map of accuracy (%), annotated, PNG."""
    plt = pyplot()

    a = 100 * np.asarray(grid, dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 2.6 + 1.1 * len(cols)), 1.2 + 0.45 * len(rows)))
    im = ax.imshow(a, cmap="RdYlGn_r", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, "" if np.isnan(a[i, j]) else f"{a[i, j]:.0f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="clean test accuracy (%)")
    ax.set_title("victim accuracy (lower = stronger protection)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_accuracy_vs_batch(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per dataset: protected (per method) and clean accuracy vs batch size, mean +- std over seeds."""
    plt = pyplot()

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        sub = [r for r in rows if r["dataset"] == d and r["batch_size"] is not None]
        for method in sorted({r["method"] for r in sub}):
            for col, label in (("protected_acc", f"{method}: protected"), ("clean_acc", None)):
                if col == "clean_acc" and method != sorted({r["method"] for r in sub})[0]:
                    continue
                xs = sorted({int(r["batch_size"]) for r in sub if r["method"] == method})
                vals = [[r[col] for r in sub if r["method"] == method and int(r["batch_size"]) == x] for x in xs]
                mean, std = np.array([np.mean(v) for v in vals]), np.array([np.std(v) for v in vals])
                style = dict(marker="o") if col == "protected_acc" else dict(marker="s", linestyle="--", color="grey")
                ax.plot(xs, mean, label=label or "clean", **style)
                ax.fill_between(xs, mean - std, mean + std, alpha=0.2, color=style.get("color"))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("clean test accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(d)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
