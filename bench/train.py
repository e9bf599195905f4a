"""Victim training throughput (images/s) per architecture, relative to the small CNN in the same process.

    python bench/train.py [--models smallcnn,resnet18] [--n 1024] [--size 28] [--channels 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from unlearnable.train.loop import Recipe, train_classifier


def images_per_s(model: str, n: int, size: int, channels: int, batch: int) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    r = Recipe(model=model, epochs=1, batch_size=batch, lr=0.01)
    train_classifier(x[:batch], y[:batch], 10, r)  # warm-up (allocator, kernels)
    t = time.perf_counter()
    train_classifier(x, y, 10, r)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="smallcnn,resnet18")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    rates = {m: images_per_s(m, a.n, a.size, a.channels, a.batch) for m in a.models.split(",")}
    ref = rates.get("smallcnn") or next(iter(rates.values()))
    print(json.dumps({"benchmark": "train/victims", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "images": a.n, "size": a.size, "channels": a.channels, "batch": a.batch,
                      "images_per_s": rates, "relative_to_smallcnn": {m: r / ref for m, r in rates.items()}},
                     indent=2))


if __name__ == "__main__":
    main()
