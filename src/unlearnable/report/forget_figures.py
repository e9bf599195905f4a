"""Figures and the Markdown table of a ``forget`` run: Dice bars per strategy and horizon, slice overlays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import pyplot

SPLITS = ("retain", "forget", "test")


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:.0f}%" if pct else f"{x:.3f}"


def results_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per strategy × horizon (and the original model) with Dice, MAE, MIA AUC, time."""
    head = ("| model | epochs | Dice retain | Dice forget | Dice test | MAE retain | MAE forget | MAE test "
            "| MIA AUC | forget drop | retain kept | gap forget/test to retrain | time s | × retrain |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    o = results["original"]
    lines.append("| original | – | " + " | ".join(_fmt(o[s]["dice"]) for s in SPLITS) + " | "
                 + " | ".join(_fmt(o[s]["mae"]) for s in SPLITS) + f" | {_fmt(o['mia_auc'])} | – | – | – | – | – |")
    for name, runs in results["strategies"].items():
        for h, r in runs.items():
            g, hd = r.get("gap_to_retrain") or {}, r.get("headline") or {}
            gap = (f"{_fmt(g.get('forget_dice'))} / {_fmt(g.get('test_dice'))}"
                   if g.get("forget_dice") is not None else "–")
            lines.append(
                f"| {name} | {h} | " + " | ".join(_fmt(r[s]["dice"]) for s in SPLITS) + " | "
                + " | ".join(_fmt(r[s]["mae"]) for s in SPLITS)
                + f" | {_fmt(r['mia_auc'])} | {_fmt(hd.get('forget_drop_pct'), True)} "
                f"| {_fmt(hd.get('retain_kept_pct'), True)} | {gap} | {r['time_s']:.1f} "
                f"| {_fmt(r.get('time_rel_retrain'))} |")
    return "\n".join(lines) + "\n"


def dice_bars(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: mean Dice on retain/forget/test for the original model and every strategy × horizon."""
    plt = pyplot()

    rows = [("original", results["original"])] + [(f"{n}\n{h} ep", r) for n, runs in results["strategies"].items()
                                                   for h, r in runs.items()]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4))
    for k, (split, colour) in enumerate(zip(SPLITS, ("tab:green", "tab:red", "tab:blue"), strict=True)):
        ax.bar(x + (k - 1) * 0.27, [r[split]["dice"] for _, r in rows], 0.27, label=split, color=colour)
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

    after = [(f"after {n}", slices[f"after_{i}"]) for i, n in enumerate(slices["strategies"])]
    panels = [("ground truth", slices["truth"]), ("before", slices["before"]), *after]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    axes = np.atleast_1d(axes)
    base = slices["image"].T
    for ax, (name, lab) in zip(axes, panels, strict=True):
        ax.imshow(base, cmap="gray", origin="lower")
        m = np.ma.masked_equal(lab.T, 0)
        ax.imshow(m, cmap="tab10", vmin=0, vmax=max(9, len(slices["classes"]) - 1), alpha=0.5, origin="lower",
                  interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
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
        overlay(slices, out / "overlay.png", "a forget subject (synthetic)" if synthetic else "a forget subject")
        figures += ["![Overlay of a forget subject](overlay.png)", ""]
    s = results.get("setup", {})
    text = [f"# Unlearning report{' (synthetic brain-phantoms)' if synthetic else ''}", "",
            f"{s.get('n_retain')} retain, {s.get('n_forget')} forget, {s.get('n_test')} test subjects; "
            f"Dice/MAE averaged over {', '.join(s.get('scored_classes', []))}. MIA AUC: loss-based attack, forget vs "
            "test subjects (0.5 = cannot tell them apart).", "", results_table(results), "", *figures]
    (out / "report.md").write_text("\n".join(text))
