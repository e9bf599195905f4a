"""CUDA protection throughput: batched implementation vs the published per-image loop, in the same process.

Prints one JSON object. Ratios (``speedup_*``) are the headline; absolute images/s depend on the machine.
    python bench/protect.py [--n32 4000] [--n224 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unlearnable.data import ImageSet
from unlearnable.protect import Key
from unlearnable.protect.cuda import ClasswiseConvolution, convolve_per_image


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def synthetic(n: int, size: int, classes: int = 10, c: int = 3) -> ImageSet:
    g = np.random.default_rng(0)
    return ImageSet.from_numpy(g.integers(0, 256, (n, size, size, c), dtype=np.uint8), g.integers(0, classes, n))


def bench_size(n: int, size: int, device: str) -> dict:
    ds = synthetic(n, size)
    algo = ClasswiseConvolution(device=device)
    filt = algo.fit(ds, Key.from_seed(0))
    algo.apply(ds.subset(range(min(8, n))), filt)  # warm-up
    t_batched = timed(lambda: algo.apply(ds, filt))
    t_loop = timed(lambda: convolve_per_image(ds.images, ds.labels, filt.weight), repeat=1)
    diff = (algo.apply(ds, filt).int() - convolve_per_image(ds.images, ds.labels, filt.weight).int()).abs().max().item()
    return {"images": n, "batched_img_s": n / t_batched, "per_image_img_s": n / t_loop,
            "speedup": t_loop / t_batched, "max_abs_diff_levels": diff}


def bench_files(n: int, device: str) -> dict:
    """End to end through files: MedMNIST-style npz -> protect_source -> npz + manifest."""
    from unlearnable.protect.run import protect_source

    tmp = Path(tempfile.mkdtemp())
    try:
        g = np.random.default_rng(0)
        arrays = {}
        for s, m in (("train", n), ("test", n // 4)):
            arrays[f"{s}_images"] = g.integers(0, 256, (m, 28, 28), dtype=np.uint8)
            arrays[f"{s}_labels"] = g.integers(0, 10, (m, 1)).astype(np.uint8)
        np.savez_compressed(tmp / "src.npz", **arrays)
        t = time.perf_counter()
        protect_source(str(tmp / "src.npz"), "cuda", tmp / "out", key_path=tmp / "k.key", device=device, quiet=True)
        wall = time.perf_counter() - t
        in_memory = timed(lambda: ClasswiseConvolution(device=device).apply(
            ImageSet.from_numpy(arrays["train_images"], arrays["train_labels"]),
            ClasswiseConvolution().fit(ImageSet.from_numpy(arrays["train_images"], arrays["train_labels"]),
                                       Key.from_seed(0))))
        return {"images": n, "end_to_end_s": wall, "end_to_end_img_s": n / wall,
                "in_memory_share": in_memory / wall}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n32", type=int, default=4000)
    ap.add_argument("--n224", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    out = {
        "benchmark": "protect/cuda",
        "device": a.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "size32": bench_size(a.n32, 32, a.device),
        "size224": bench_size(a.n224, 224, a.device),
        "files_28px": bench_files(a.n32, a.device),
    }
    out["speedup_32"] = out["size32"]["speedup"]
    out["speedup_224"] = out["size224"]["speedup"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
