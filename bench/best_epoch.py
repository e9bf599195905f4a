"""Final epoch against best epoch, from recorded sweep rows: how much a trainer who keeps the best epoch gains.

Every ``bench/efficacy_sweep.py`` row holds the victim's final-epoch clean-test accuracy (``test``, what the goal and
the verdicts score) and its best epoch's (``best_test``). A trainer who holds back clean images and keeps the epoch
that scores best on them gets the second. This reads the rows (no training), groups them by dataset, victim and
protection, and prints one JSON line per group with at least ``--min-runs`` runs, then a Markdown table:

    python bench/best_epoch.py bench/rows/*.jsonl bench/rows/*/rows.jsonl --min-runs 3 \
        --figure docs/figures/best_epoch.png     # every run of FIGURE's groups: final and best epoch
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from typing import Any

from unlearnable.audit.verify import PROTECTED_MARGIN as MARGIN  # the goal: within 10 points of chance

#: the groups the figure draws (docs/benchmarks.md, "Final epoch against best epoch"): the default tiles against
#: each victim, and the protections that hold best where they hold
FIGURE = (("mni-tissue", "smallcnn", "tiles,levels=oppose"), ("mni-tissue", "resnet18", "tiles,levels=oppose"),
          ("textures", "smallcnn", "tiles"), ("textures", "resnet18", "tiles,levels=oppose"),
          ("textures-norm", "smallcnn", "tiles"), ("textures-norm@96", "resnet18", "tiles,period=4"),
          ("mnist5k", "resnet18", "adv,init=tiles,epochs=40,min_steps=1,ensemble=3,flip=false"))


def _within(accs: list[float], chance: float | None) -> int | None:
    """How many runs are within :data:`MARGIN` of chance (None when the rows do not say what chance is)."""
    return None if chance is None else sum(a <= chance + MARGIN for a in accs)


def read(paths: list[str]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Every finished run that recorded a best epoch, by (data, victim, spec)."""
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        with open(path) as f:
            for line in filter(str.strip, f):
                r = json.loads(line)
                if "error" not in r and r.get("best_test") is not None:
                    runs[(r["data"], r["victim"], r["spec"])].append(r)
    return runs


def groups(paths: list[str], min_runs: int = 3) -> list[dict[str, Any]]:
    """One summary per (data, victim, spec) with at least ``min_runs`` finished runs that recorded a best epoch."""
    runs = read(paths)
    out = []
    for (data, victim, spec), rs in sorted(runs.items()):
        if len(rs) < min_runs:
            continue
        chance = next((r["chance"] for r in rs if r.get("chance") is not None), None)  # early rows lack it
        final, best = [r["test"] for r in rs], [r["best_test"] for r in rs]
        out.append({"data": data, "victim": victim, "spec": spec, "runs": len(rs), "chance": chance,
                    "final_mean": round(statistics.mean(final), 4), "best_mean": round(statistics.mean(best), 4),
                    "final_within_goal": _within(final, chance), "best_within_goal": _within(best, chance)})
    return out


def _n(x: int | None) -> str:
    return "–" if x is None else str(x)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data | victim | protection | runs | final epoch % (mean) | best epoch % (mean) | runs within 10 points "
             "of chance: final / best |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['victim']} | `{r['spec']}` | {r['runs']} | {100 * r['final_mean']:.1f} | "
                     f"{100 * r['best_mean']:.1f} | {_n(r['final_within_goal'])} / {_n(r['best_within_goal'])} |")
    return "\n".join(lines) + "\n"


def figure(paths: list[str], out: str, which: tuple[tuple[str, str, str], ...] = FIGURE) -> None:
    """One row per group of ``which`` that has runs: each run's final epoch (filled) joined to its best epoch
    (hollow), with chance and the goal (chance + 10 points) marked on each row."""
    from unlearnable.report import pyplot

    runs = read(paths)
    shown = [k for k in which if runs.get(k)]
    if not shown:
        raise SystemExit(f"--figure: none of the figure's groups has runs in {', '.join(paths)}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.75 * len(shown) + 1.2))
    for y, key in enumerate(shown):
        rs = runs[key]
        jitter = [0.3 * (i / max(1, len(rs) - 1) - 0.5) for i in range(len(rs))]
        for r, j in zip(rs, jitter):
            ax.plot([100 * r["test"], 100 * r["best_test"]], [y + j, y + j], color="grey", lw=0.6, alpha=0.6)
        ax.scatter([100 * r["test"] for r in rs], [y + j for j in jitter], s=14, color="tab:blue",
                   label="final epoch" if y == 0 else None, zorder=3)
        ax.scatter([100 * r["best_test"] for r in rs], [y + j for j in jitter], s=14, facecolors="none",
                   edgecolors="tab:red", label="best epoch" if y == 0 else None, zorder=3)
        chance = next((100 * r["chance"] for r in rs if r.get("chance") is not None), None)
        if chance is not None:
            ax.plot([chance, chance], [y - 0.4, y + 0.4], color="black", ls=":", lw=1)
            ax.plot([chance + 100 * MARGIN] * 2, [y - 0.4, y + 0.4], color="green", ls=":", lw=1)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([f"{d}, {v}\n{sp if len(sp) < 34 else sp[:32] + '…'} ({len(runs[(d, v, sp)])})"
                        for d, v, sp in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("clean-test accuracy (%); dotted: chance (black) and the goal, chance + 10 (green)")
    ax.set_title("Each run's final epoch and its best epoch", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", help="JSON-lines files written by bench/efficacy_sweep.py run")
    ap.add_argument("--min-runs", type=int, default=3)
    ap.add_argument("--figure", default=None, help="also draw FIGURE's groups, every run, to this PNG")
    a = ap.parse_args(argv)
    rows = groups(a.rows, a.min_runs)
    for r in rows:
        print(json.dumps(r))
    print(table(rows))
    if a.figure:
        figure(a.rows, a.figure)


if __name__ == "__main__":
    main()
