"""Final epoch against best epoch, from recorded sweep rows: how much a trainer who keeps the best epoch gains.

Every ``bench/efficacy_sweep.py`` row holds the victim's final-epoch clean-test accuracy (``test``, what the goal and
the verdicts score) and its best epoch's (``best_test``). A trainer who holds back clean images and keeps the epoch
that scores best on them gets the second. This reads the rows (no training), groups them by dataset, victim and
protection, and prints one JSON line per group with at least ``--min-runs`` runs, then a Markdown table:

    python bench/best_epoch.py bench/rows/*.jsonl bench/rows/*/rows.jsonl --min-runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from typing import Any

MARGIN = 0.10  # the goal: within 10 points of chance


def _within(accs: list[float], chance: float | None) -> int | None:
    """How many runs are within :data:`MARGIN` of chance (None when the rows do not say what chance is)."""
    return None if chance is None else sum(a <= chance + MARGIN for a in accs)


def groups(paths: list[str], min_runs: int = 3) -> list[dict[str, Any]]:
    """One summary per (data, victim, spec) with at least ``min_runs`` finished runs that recorded a best epoch."""
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        with open(path) as f:
            for line in filter(str.strip, f):
                r = json.loads(line)
                if "error" not in r and r.get("best_test") is not None:
                    runs[(r["data"], r["victim"], r["spec"])].append(r)
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", help="JSON-lines files written by bench/efficacy_sweep.py run")
    ap.add_argument("--min-runs", type=int, default=3)
    a = ap.parse_args(argv)
    rows = groups(a.rows, a.min_runs)
    for r in rows:
        print(json.dumps(r))
    print(table(rows))


if __name__ == "__main__":
    main()
