"""Figures and the Markdown table of a ``forget`` run: Dice bars per strategy and horizon, slice overlays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import pyplot
from .palette import color, tissue_colors

SPLITS = ("retain", "forget", "test")


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:.0f}%" if pct else f"{x:.3f}"


def _mia(r: dict[str, Any], attack: str) -> str:
    m = (r.get("mia") or {}).get(attack)
    if not m:
        return _fmt(r.get("mia_auc")) if attack == "loss" else "–"
    lo, hi = m["ci"]
    return f"{_fmt(m['auc'])} [{_fmt(lo)}, {_fmt(hi)}]"


def results_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per strategy × horizon (and the original model) with Dice, MAE, gap to retrain, both
    MIA AUCs with 95% bootstrap intervals, retain kept, optimiser steps and time (absolute and × retrain)."""
    head = ("| model | epochs | Dice retain | Dice forget | Dice test | MAE retain | MAE forget | MAE test "
            "| gap forget Dice | MIA loss AUC [95% CI] | gap MIA loss | MIA learned AUC [95% CI] | gap MIA learned "
            "| retain kept "
            "| steps | × retrain steps | time s | × retrain time | × retrain CPU time |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    o = results["original"]
    lines.append("| original | – | " + " | ".join(_fmt(o[s]["dice"]) for s in SPLITS) + " | "
                 + " | ".join(_fmt(o[s]["mae"]) for s in SPLITS)
                 + f" | – | {_mia(o, 'loss')} | – | {_mia(o, 'learned')} | – | – | – | – | – | – | – |")
    for name, runs in results["strategies"].items():
        for h, r in runs.items():
            g, hd = r.get("gap_to_retrain") or {}, r.get("headline") or {}
            stopped = "" if r.get("stopped_at") is None else " (stopped)"
            lines.append(
                f"| {name} | {h} | " + " | ".join(_fmt(r[s]["dice"]) for s in SPLITS) + " | "
                + " | ".join(_fmt(r[s]["mae"]) for s in SPLITS)
                + f" | {_fmt(g.get('forget_dice'))} | {_mia(r, 'loss')} | {_fmt(g.get('mia_auc'))} "
                f"| {_mia(r, 'learned')} "
                f"| {_fmt(g.get('mia_learned_auc'))} | {_fmt(hd.get('retain_kept_pct'), True)} "
                f"| {r.get('steps', '–')}{stopped} | {_fmt(r.get('steps_rel_retrain'))} | {r['time_s']:.1f} "
                f"| {_fmt(r.get('time_rel_retrain'))} | {_fmt(r.get('cpu_rel_retrain'))} |")
    return "\n".join(lines) + "\n"


def dice_bars(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: mean Dice on retain/forget/test for the original model and every strategy × horizon."""
    plt = pyplot()

    rows = [("original", results["original"])] + [(f"{n}\n{h} ep", r) for n, runs in results["strategies"].items()
                                                   for h, r in runs.items()]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4))
    for k, split in enumerate(SPLITS):
        ax.bar(x + (k - 1) * 0.27, [r[split]["dice"] for _, r in rows], 0.27, label=split, color=color(split))
    ax.set_xticks(x, [n for n, _ in rows], fontsize=7)
    ax.set_ylabel("mean Dice (scored classes)")
    ax.set_ylim(0, 1)
    synth = " (synthetic brain-phantoms)" if results.get("setup", {}).get("synthetic") else ""
    ax.set_title(f"Dice per strategy and horizon{synth}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def overlay(slices: dict[str, np.ndarray], path: Path, title: str = "forget subject") -> None:
    """One axial slice of a subject: image, ground truth, before, and after each strategy.

    Args:
        slices: ``overlay.npz`` as written by ``forget``: ``image``, ``truth``, ``before``, ``after_<i>`` ``(D, H)``,
            ``strategies`` (names of the ``after_<i>``) and ``classes``.
    """
    plt = pyplot()

    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    classes = [str(c) for c in slices["classes"]]
    colours = tissue_colors(classes)
    cmap = ListedColormap(colours)
    after = [(f"after {n}", slices[f"after_{i}"]) for i, n in enumerate(slices["strategies"])]
    panels = [("ground truth", slices["truth"]), ("before", slices["before"]), *after]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 3.0))
    axes = np.atleast_1d(axes)
    base = slices["image"].T
    for ax, (name, lab) in zip(axes, panels, strict=True):
        ax.imshow(base, cmap="gray", origin="lower")
        m = np.ma.masked_equal(lab.T, 0)
        ax.imshow(m, cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, alpha=0.55, origin="lower",
                  interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    key = [Patch(facecolor=c, edgecolor="#666666", label=n.upper() if n.lower() in ("csf", "gm", "wm") else n)
           for n, c in zip(classes, colours)]
    key[0] = Patch(facecolor="none", edgecolor="#666666", label=f"{classes[0]} (no overlay)")
    fig.legend(handles=key, loc="lower center", ncol=len(key), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path) -> None:
    """Read ``results.json`` (and ``overlay.npz`` when present) in folder ``out``; write ``dice_bars.png``,
    ``overlay.png`` and ``report.md`` beside them."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    dice_bars(results, out / "dice_bars.png")
    synthetic = results.get("setup", {}).get("synthetic")
    figures = ["![Dice per strategy](dice_bars.png)", ""]
    if (out / "overlay.npz").is_file():
        with np.load(out / "overlay.npz", allow_pickle=False) as z:
            slices = {k: z[k] for k in z.files}
        # the predictions in overlay.npz are the last horizon's (forget/run.py)
        horizon = max((int(h) for runs in results["strategies"].values() for h in runs), default=0)
        slices["strategies"] = np.array([f"{n} ({horizon} ep)" for n in slices["strategies"]])
        overlay(slices, out / "overlay.png", ("a forget subject (synthetic)" if synthetic else "a forget subject")
                + f": middle axial slice, after {horizon} unlearning epochs")
        figures += ["![Overlay of a forget subject](overlay.png)", ""]
    s = results.get("setup", {})
    text = [f"# Unlearning report{' (synthetic brain-phantoms)' if synthetic else ''}", "",
            f"{s.get('n_retain')} retain, {s.get('n_forget')} forget, {s.get('n_test')} test subjects; "
            f"Dice/MAE averaged over {', '.join(s.get('scored_classes', []))}. MIA AUC: forget vs held-out (test) "
            "subjects, by the loss-threshold attack and by a logistic regression on per-subject features trained on "
            "retain vs held-out subjects (0.5 = cannot tell them apart), with 95% bootstrap intervals. Approximate "
            f"strategies may take {s.get('budget')} of retrain's optimiser steps.", "", results_table(results), "",
            *figures]
    (out / "report.md").write_text("\n".join(text))
