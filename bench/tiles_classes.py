"""How the `tiles` fit scales with the number of classes: the release's batched choice against a one-by-one scan of
the same rule (the reference, in this process), and the whole fit up to 1,000 classes (ImageNet-1k's count).

The fit draws one sign tile per class, keeping the candidate farthest from every chosen tile under every shift and
mirror, then gives the tile means out by the classes' colours (a local search over swaps). Both steps grew with the
cube of the class count or worse: 1,000 grey classes took 417 s. Prints one JSON object: per class count, the fit's
seconds, and, up to ``--reference-max`` classes, the reference scan's seconds for the tile choice and whether it
chose the same tiles (it must).

    PYTHONPATH=src python bench/tiles_classes.py [--classes 10,100,300,1000] [--reference-max 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from unlearnable.data import ImageSet
from unlearnable.protect import METHODS, Key
from unlearnable.protect.tiles import (
    BY_COLOUR,
    _signs,
    _variants,
    draw_tiles,
    levels_by_colour,
    oppose_colour,
    spread_levels,
)


def scan_tiles(num_classes: int, channels: int, period: int, g: torch.Generator, levels: str = "spread",
               means: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: the rule :func:`draw_tiles` batches, each candidate scored against each chosen tile's
    variants in turn (also the tests' reference, tests/protect/test_tiles_ar.py)."""
    counts = spread_levels(num_classes, channels, period * period, g) if levels != "random" else None
    if levels in BY_COLOUR:
        counts = levels_by_colour(counts, means)
        if levels == "oppose":
            counts = oppose_colour(counts, means, period * period)
    chosen, banks = [], []
    for k in range(num_classes):
        best, best_d, best_same = None, -1.0, 1.0
        for level in ([] if counts is None else [counts[k]]) + [None]:
            for _ in range(64):
                t = _signs(level, channels, period, g)
                if t is None:
                    continue
                v = t.flatten()
                agree = torch.stack([b @ v for b in banks]) / v.numel() if banks else torch.zeros(1)
                d = float(1 - agree.abs().max())
                if d > best_d:
                    best, best_d, best_same = t, d, float(agree.max())
            if best_same < 1:
                break
        chosen.append(best)
        banks.append(_variants(best))
    return torch.stack(chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", default="10,100,300,1000")
    ap.add_argument("--reference-max", type=int, default=300)
    ap.add_argument("--per-class", type=int, default=2, help="images per class in the fitted dataset")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for k in [int(x) for x in args.classes.split(",")]:
        for channels, period in ((1, 4), (3, 2)):
            row = {"classes": k, "channels": channels, "period": period}
            t = time.perf_counter()
            got = draw_tiles(k, channels, period, torch.Generator().manual_seed(k), levels="spread")
            row["choice_s"] = round(time.perf_counter() - t, 3)
            if k <= args.reference_max:
                t = time.perf_counter()
                want = scan_tiles(k, channels, period, torch.Generator().manual_seed(k))
                row["reference_choice_s"] = round(time.perf_counter() - t, 3)
                row["speedup_choice"] = round(row["reference_choice_s"] / max(row["choice_s"], 1e-6), 1)
                row["same_tiles"] = bool(torch.equal(got, want))
            n, size = k * args.per_class, 32
            rng = np.random.default_rng(k)
            shape = (n, size, size, 3) if channels == 3 else (n, size, size)
            ds = ImageSet.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8), np.arange(n) % k)
            algo = METHODS.get("tiles")()  # the default levels=oppose: reads the class means, runs the local search
            t = time.perf_counter()
            algo.apply(ds, algo.fit(ds, Key.from_seed(1)))
            row["fit_apply_s"] = round(time.perf_counter() - t, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "load_avg_1min_at_end": load, "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
