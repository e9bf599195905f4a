"""The figure and Markdown of an ``audit-seg`` run, drawn from its results folder only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import pyplot
from .palette import tissue_colors


def slice_figure(slices: dict[str, np.ndarray], classes: list[str], title: str, path: Path) -> None:
    """One axial slice: clean, protected and their difference x10 (a training subject), then the ground truth and
    the clean- and protected-trained models' predictions on a held-out clean subject."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(tissue_colors(classes))
    clean, prot = slices["image"].astype(np.float64), slices["protected"].astype(np.float64)
    diff = np.clip(128 + 10 * (prot - clean), 0, 255)
    grey = [("clean", clean), ("protected", prot), ("difference x10", diff)]
    labels = [("ground truth", slices["truth"]), ("trained on clean", slices["pred_clean"]),
              ("trained on protected", slices["pred_protected"])]
    fig, axes = plt.subplots(2, 3, figsize=(6.6, 4.8))
    for ax, (name, img) in zip(axes[0], grey, strict=True):
        ax.imshow(img.T, cmap="gray", vmin=0, vmax=255, origin="lower")
        ax.set_title(name, fontsize=8)
    for ax, (name, lab) in zip(axes[1], labels, strict=True):
        ax.imshow(slices["test_image"].T, cmap="gray", vmin=0, vmax=255, origin="lower")
        ax.imshow(np.ma.masked_equal(lab.T, 0), cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, alpha=0.55,
                  origin="lower", interpolation="nearest")
        ax.set_title(f"{name} (held-out)" if name != "ground truth" else "held-out: ground truth", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_table(results: dict[str, Any]) -> str:
    """Markdown: Dice/MAE on held-out clean subjects of the clean- and protected-trained models, per defence."""
    lines = ["| defence | Dice clean-trained | Dice protected-trained | ratio | MAE clean-trained | "
             "MAE protected-trained |", "|---|---|---|---|---|---|"]
    for d, r in results["runs"].items():
        ratio = r.get("dice_ratio")
        lines.append(f"| {d} | {r['clean']['dice']:.3f} | {r['protected']['dice']:.3f} | "
                     f"{'–' if ratio is None else f'{ratio:.2f}'} | {r['clean']['mae']:.3f} | "
                     f"{r['protected']['mae']:.3f} |")
    return "\n".join(lines)


def write_report(out: Path) -> None:
    """Read ``results.json`` and ``slices.npz`` in ``out``; write ``audit_seg.png`` and ``report.md`` beside them."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    eps = results.get("eps")
    title = (f"{results.get('method')} at eps {eps * 255:.3g}/255, victim {results['model']}" if eps
             else str(results.get("method")))
    if (out / "slices.npz").is_file():
        with np.load(out / "slices.npz") as z:
            slice_figure({k: z[k] for k in z.files}, results["classes"], title, out / "audit_seg.png")
    text = [f"# audit-seg: {title}", "", f"Protected: `{results['protected']}`; clean: `{results['clean']}`; "
            f"{len(results['train_ids'])} training subjects, {len(results['test_ids'])} held-out (clean).", "",
            results_table(results), ""]
    cues = results.get("intensity_cues")
    if isinstance(cues, dict) and cues.get("summary"):
        text += [str(cues["summary"])[0].upper() + str(cues["summary"])[1:] + " (docs/methods.md, \"How much room "
                 "the budget leaves\").", ""]
    text += ["![slice](audit_seg.png)", ""]
    (out / "report.md").write_text("\n".join(text))
