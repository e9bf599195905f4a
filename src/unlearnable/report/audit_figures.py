"""What the report draws for the audit commands, from their results files only.

``audit``: ``audit.json`` -> ``audit.md`` (accuracy table) and ``heatmap.png`` (methods x defences);
``sweep``: ``sweep.csv`` -> ``accuracy_vs_batch_size.png``. The commands write the results files and nothing else;
:func:`draw_audit` / :func:`draw_sweep` run when the report of their folder is rendered.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import write_text
from . import pyplot
from .palette import INVALID, color
from .render import markdown_table

CLEAN = "clean"  # the audit's baseline rows


def _label(row: Mapping[str, Any]) -> str:
    return "clean (no protection)" if row["method"] == CLEAN else f"{row['method']} (mix {float(row['mix']):g})"


def accuracy_grid(rows: Sequence[Mapping[str, Any]], defenses: Sequence[str]) -> tuple[list[str], list[list[float]]]:
    """Row labels and a (rows x defences) grid of clean test accuracy (protected victims; baseline first)."""
    labels: list[str] = []
    acc: dict[tuple[str, str], float] = {}
    for r in rows:
        lab = _label(r)
        if lab not in labels:
            labels.append(lab)
        acc[(lab, r["defense"])] = float(r["protected_acc"])
    return labels, [[acc.get((lab, d), float("nan")) for d in defenses] for lab in labels]


def audit_markdown(doc: Mapping[str, Any]) -> str:
    """``audit.md``: the accuracy table of an ``audit.json`` (rows x defences), invalid columns marked."""
    rows, defenses = doc["rows"], list(doc["defenses"])
    labels, grid = accuracy_grid(rows, defenses)
    bad = {r["defense"]: r.get("invalid_reason") for r in rows if not r.get("valid", True)}
    table = [{"training data": lab} | {d: f"{100 * v:.1f}" + (" (invalid)" if d in bad else "")
                                       for d, v in zip(defenses, vals)} for lab, vals in zip(labels, grid)]
    notes = "".join(f"\n- **invalid: defence `{d}`**: {why}." for d, why in bad.items())
    return (f"# Robustness audit\n\nClean test accuracy (%) of a `{doc.get('model')}` victim ({doc.get('epochs')} "
            f"epochs) trained on the data in each row through the defence in each column. `mix R`: only a fraction "
            f"R of the training split is protected, the rest is clean; `clean rows only (mix R)` is a victim trained "
            f"on just the rows that `mix R` leaves clean (as many SGD steps as the others): an unlearnable method "
            f"cannot take a victim below it at that mix. Lower is better protection; the first row is the clean "
            f"baseline. A column is *invalid* when its clean baseline did not beat chance clearly (see "
            f"`baseline_valid`): its numbers prove nothing.\n\n{markdown_table(table, ['training data', *defenses])}"
            f"\n{notes}\n")


def draw_audit(folder: Path) -> None:
    """``audit.md`` and ``heatmap.png`` of an audit folder from its ``audit.json`` (nothing when it has none)."""
    try:
        doc = json.loads((folder / "audit.json").read_text())
    except (OSError, ValueError):
        return
    write_text(folder / "audit.md", audit_markdown(doc))
    labels, grid = accuracy_grid(doc["rows"], doc["defenses"])
    invalid = {r["defense"] for r in doc["rows"] if not r.get("valid", True)}
    tmp = folder / f".heatmap.tmp-{os.getpid()}.png"
    heatmap(labels, list(doc["defenses"]), grid, tmp, invalid=invalid)
    os.replace(tmp, folder / "heatmap.png")


def draw_sweep(folder: Path) -> None:
    """``accuracy_vs_batch_size.png`` from ``sweep.csv`` when its cells vary a batch size."""
    with (folder / "sweep.csv").open(newline="") as f:
        rows = [dict(r) | {"batch_size": int(r["batch_size"]) if r["batch_size"] else None,
                           "clean_acc": float(r["clean_acc"]), "protected_acc": float(r["protected_acc"])}
                for r in csv.DictReader(f)]
    if any(r["batch_size"] is not None for r in rows):
        plot_accuracy_vs_batch(rows, folder / "accuracy_vs_batch_size.png")


def heatmap(rows: Sequence[str], cols: Sequence[str], grid: Sequence[Sequence[float]], path: Path,
            invalid: set[str] | frozenset[str] = frozenset()) -> Path:
    """A rows x defences heat map of accuracy (%), annotated, PNG; ``invalid`` columns are grey and hatched."""
    from matplotlib.patches import Patch, Rectangle

    plt = pyplot()
    a = 100 * np.asarray(grid, dtype=float)
    bad = [j for j, c in enumerate(cols) if c in invalid]
    shown = a.copy()
    shown[:, bad] = np.nan  # never coloured as protection: a baseline that did not learn proves nothing
    fig, ax = plt.subplots(figsize=(max(5.0, 2.6 + 1.1 * len(cols)), 1.6 + 0.45 * len(rows)))
    cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad=INVALID)
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for j in bad:
        ax.add_patch(Rectangle((j - 0.5, -0.5), 1, len(rows), fill=False, hatch="///", edgecolor="#888888", lw=0))
    ax.set_xticks(range(len(cols)), [c + (" (invalid)" if c in invalid else "") for c in cols], rotation=30,
                  ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, "" if np.isnan(a[i, j]) else f"{a[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="#555555" if j in bad else "black")
    if bad:
        ax.legend(handles=[Patch(facecolor=INVALID, hatch="///", edgecolor="#888888",
                                 label="invalid: clean baseline did not beat chance")],
                  loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize=7, frameon=False)
    fig.colorbar(im, ax=ax, label="clean test accuracy (%)")
    ax.set_title("victim accuracy (lower = stronger protection)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_accuracy_vs_batch(rows: list[dict[str, Any]], path: Path) -> None:
    """Protected accuracy vs batch size, one panel per method and one line per dataset (mean, with the min-max
    spread over seeds shaded and every seed's value as a dot); each dataset's clean accuracy is a dashed line of
    the same colour. The caption names the learning-rate scaling rule the cells used.

    Cells marked ``valid == "no"`` are left out (a victim that did not learn says nothing about protection) and
    counted in the caption."""
    plt = pyplot()

    invalid = sum(r.get("valid") == "no" for r in rows)
    rows = [r for r in rows if r.get("valid") != "no" and r["batch_size"] is not None]
    methods = sorted({r["method"] for r in rows}) or ["(no valid cells)"]
    fig, axes = plt.subplots(1, len(methods), figsize=(6.2 * len(methods), 4.4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        sub = [r for r in rows if r["method"] == method]
        for d in sorted({r["dataset"] for r in sub}):
            mine = [r for r in sub if r["dataset"] == d]
            xs = sorted({int(r["batch_size"]) for r in mine})
            prot = [[100 * r["protected_acc"] for r in mine if int(r["batch_size"]) == x] for x in xs]
            clean = [[100 * r["clean_acc"] for r in mine if int(r["batch_size"]) == x] for x in xs]
            c = color(d)
            ax.plot(xs, [np.mean(v) for v in prot], marker="o", color=c, label=f"{d}: protected")
            ax.fill_between(xs, [min(v) for v in prot], [max(v) for v in prot], alpha=0.18, color=c, lw=0)
            for x, v in zip(xs, prot):
                ax.scatter([x] * len(v), v, s=9, color=c, alpha=0.6, zorder=3)
            ax.plot(xs, [np.mean(v) for v in clean], linestyle="--", marker="s", mfc="none", color=c, alpha=0.8,
                    label=f"{d}: clean")
            chance = {round(100 * float(r["chance_acc"]), 1) for r in mine if r.get("chance_acc")}
            for ch in chance:
                ax.axhline(ch, color=c, linestyle=":", lw=0.8, alpha=0.7)
        ax.set_xscale("log", base=2)
        xs_all = sorted({int(r["batch_size"]) for r in sub})
        if xs_all:
            ax.set_xticks(xs_all, [str(x) for x in xs_all])
        ax.set_xlabel(f"{method} batch size (global)")
        ax.set_ylabel("victim accuracy on clean test images (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{method}: lower = more unlearnable", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    rules = sorted({r.get("lr_scaling") or "" for r in rows} - {""})
    seeds = sorted({str(r.get("seed")) for r in rows})
    caption = (f"Solid: protected, mean over {len(seeds)} seed(s) (band: min-max; dots: each seed); dashed: clean; "
               "dotted: chance. "
               + (f"Learning rate scaled with the batch by the '{rules[0]}' rule "
                  f"({_RULES.get(rules[0], rules[0])}). " if len(rules) == 1 else
                  (f"Learning-rate scaling rules: {', '.join(rules)}. " if rules else ""))
               + (f"{invalid} invalid cell(s) (victim did not learn) not shown." if invalid else ""))
    fig.text(0.01, 0.01, caption, fontsize=7, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


_RULES = {"none": "the same lr at every batch", "linear": "lr x batch/base", "sqrt": "lr x sqrt(batch/base)"}
