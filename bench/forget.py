"""Benchmark: wall time of every unlearning strategy relative to ``retrain`` on the same data, in one process.

Prints one JSON object. Times are training-only (evaluation excluded), measured by the same horizon runner that
``unlearnable forget`` uses, on synthetic brain-phantoms::

    PYTHONPATH=src python bench/forget.py --n 10 --size 24 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from unlearnable.data.phantoms import brain_phantoms
from unlearnable.forget import STRATEGIES, ForgetTask, run_strategy
from unlearnable.forget.base import strategy_names
from unlearnable.models.seg3d import build_seg_model
from unlearnable.segment.train import SegConfig, train_segmenter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="synthetic subjects (2 forgotten, the rest retained)")
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of original training and of each strategy")
    ap.add_argument("--model", default="resnet10")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1, help="take the fastest of this many runs per strategy")
    args = ap.parse_args()
    s = brain_phantoms(n=args.n, size=args.size)
    cfg = SegConfig(model=args.model, width=args.width, patch=args.size - args.size % 8, epochs=args.epochs)
    t0 = time.perf_counter()
    trained, _ = train_segmenter(s.images, s.labels, s.num_classes, cfg)
    train_s = time.perf_counter() - t0
    task = ForgetTask(s.images[2:], s.labels[2:], s.images[:2], s.labels[:2], s.num_classes, cfg)
    times: dict[str, float] = {}
    for name in strategy_names("all"):  # retrain first: it is the reference
        best = float("inf")
        for _ in range(args.repeats):
            got: list[float] = []
            run_strategy(STRATEGIES.get(name)(), trained,
                         lambda: build_seg_model(args.model, s.channels, s.num_classes, args.width), task,
                         [args.epochs], lambda h, m, t, got=got: got.append(t))
            best = min(best, got[-1])
        times[name] = best
    ref = times["retrain"]
    print(json.dumps({
        "benchmark": "forget", "reference": "retrain",
        "data": f"brain-phantoms:n={args.n},size={args.size} (synthetic)",
        "model": f"{args.model} width {args.width}", "epochs": args.epochs, "retain": args.n - 2, "forget": 2,
        "threads": torch.get_num_threads(), "machine": platform.machine(), "original_training_s": round(train_s, 3),
        "time_s": {k: round(v, 3) for k, v in times.items()},
        "relative_to_retrain": {k: round(v / ref, 3) for k, v in times.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
