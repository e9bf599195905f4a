"""Read a batch-size study's ``sweep.csv``: is there a U shape, where, and how sure can we be over seeds?

For each (dataset, method): protected accuracy per batch size (mean over seeds), the batch size with the lowest
mean (the most unlearnable), and, with seeds paired (a seed fixes the key and the victim's initialisation in every
cell), the per-seed differences between that minimum and the smallest and the largest batch. A U shape is claimed
only when the minimum lies strictly inside the range AND the minimum is below both ends for every seed. Also how
the variation splits between batch size and seed (sums of squares of the batch means and the seed means around the
grand mean, over the full batch x seed table, as shares of the total) and, when ``sweep.csv`` has UC's
``cluster_purity``, its correlation with protected accuracy over cells. Prints one JSON object (per dataset: the
numbers and the verdict).

    python bench/batch_study.py sweeps/batch_size_study_cpu/sweep.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics as st
from collections import defaultdict


def reading(rows: list[dict[str, str]]) -> dict[str, dict]:
    groups: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    clean: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    purity: dict[tuple[str, str], list[tuple[str, float, float]]] = defaultdict(list)  # (seed, purity, protected)
    for r in rows:
        if r.get("valid") == "no" or not r.get("batch_size"):
            continue
        key = (r["dataset"], r["method"])
        groups[key][int(r["batch_size"])][r["seed"]] = 100 * float(r["protected_acc"])
        clean[key][r["seed"]] = 100 * float(r["clean_acc"])
        if r.get("cluster_purity"):
            purity[key].append((r["seed"], float(r["cluster_purity"]), 100 * float(r["protected_acc"])))
    out = {}
    for (d, m), by_bs in sorted(groups.items()):
        sizes = sorted(by_bs)
        means = {b: st.mean(by_bs[b].values()) for b in sizes}
        sds = {b: (st.stdev(by_bs[b].values()) if len(by_bs[b]) > 1 else 0.0) for b in sizes}
        best = min(sizes, key=lambda b: means[b])
        seeds = sorted(set.intersection(*(set(by_bs[b]) for b in sizes)))
        lo, hi = sizes[0], sizes[-1]
        d_lo = [by_bs[lo][s] - by_bs[best][s] for s in seeds]  # > 0: the minimum is better than the smallest batch
        d_hi = [by_bs[hi][s] - by_bs[best][s] for s in seeds]
        interior = lo < best < hi
        u = interior and all(x > 0 for x in d_lo) and all(x > 0 for x in d_hi)
        c = st.mean(clean[(d, m)].values())
        split = variance_split({b: {s: by_bs[b][s] for s in seeds} for b in sizes}, seeds) if seeds else {}
        pur = purity.get((d, m), [])
        corr = (round(st.correlation([x for _, x, _ in pur], [y for _, _, y in pur]), 2)
                if len({x for _, x, _ in pur}) > 1 else None)
        out[f"{d}/{m}"] = {
            "clean_mean": round(c, 1),
            "protected_mean": {str(b): round(means[b], 1) for b in sizes},
            "protected_sd": {str(b): round(sds[b], 1) for b in sizes},
            "mean_sd_over_seeds": round(st.mean(sds.values()), 1),
            "range_of_means": round(max(means.values()) - min(means.values()), 1),
            "best_batch": best,
            "drop_at_best": round(c - means[best], 1),
            "paired_seeds": len(seeds),
            "best_vs_smallest_per_seed": [round(x, 1) for x in d_lo],
            "best_vs_largest_per_seed": [round(x, 1) for x in d_hi],
            "variance_share": split,
            "purity_vs_protected_corr": corr,
            "purity_per_seed": {s: round(x, 3) for s, x, _ in pur},
            "u_shape": u,
            "verdict": ("U shape: the minimum is inside the range and below both ends for every seed" if u else
                        "no U shape: " + ("the minimum is at an end of the range" if not interior else
                                          "the minimum is inside the range but not below both ends for every seed")),
        }
    return out


def variance_split(table: dict[int, dict[str, float]], seeds: list[str]) -> dict[str, float]:
    """Shares of the total sum of squares of a complete batch x seed table: batch means, seed means, the rest."""
    vals = [table[b][s] for b in table for s in seeds]
    grand = st.mean(vals)
    total = sum((v - grand) ** 2 for v in vals)
    if total == 0:
        return {"batch": 0.0, "seed": 0.0, "rest": 0.0}
    ss_b = len(seeds) * sum((st.mean(table[b][s] for s in seeds) - grand) ** 2 for b in table)
    ss_s = len(table) * sum((st.mean(table[b][s] for b in table) - grand) ** 2 for s in seeds)
    return {"batch": round(ss_b / total, 2), "seed": round(ss_s / total, 2),
            "rest": round(1 - (ss_b + ss_s) / total, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="a study's sweep.csv")
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        print(json.dumps(reading(list(csv.DictReader(f))), indent=1))


if __name__ == "__main__":
    main()
