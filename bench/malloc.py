"""CPU training with glibc's large blocks kept in the heap (``MALLOC_MMAP_THRESHOLD_``) against its defaults.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB, adjusted on the fly) with a fresh
``mmap`` and returns it with ``munmap`` when freed, and the kernel zeroes the new pages on first touch. A CPU
training step allocates and frees tensors far larger than that (one activation of the small CNN on 64 images at
224 px is 411 MB), so each step maps and zeroes memory anew. Raising the threshold (and the trim threshold) through
glibc's own environment variables keeps those blocks in the heap for reuse; the price is a higher peak, since freed
blocks of one size do not always fit the next request.

Each run is a fresh process that trains a victim the way ``protect --verify`` and ``evaluate`` do, with glibc's
defaults (the reference) or with ``MALLOC_MMAP_THRESHOLD_=MALLOC_TRIM_THRESHOLD_=2147483647`` (tuned). Runs
alternate (reference, tuned) ``--pairs`` times; the headline is the ratio of median wall times, beside the kernel
(system) time, the minor page faults and the peak resident memory of each.

    PYTHONPATH=src python bench/malloc.py [--pairs 3] [--cases smallcnn@224,smallcnn@32,resnet18@32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

LIMIT = 2**31 - 1  # 2 GiB - 1: every block a victim allocates stays in the heap
CASES = {  # model@size: images, epochs (each run a few tens of seconds on the 2-core reference machine)
    "smallcnn@224": (256, 2),
    "smallcnn@32": (4096, 1),
    "resnet18@32": (768, 1),
}


def child(case: str) -> None:
    import resource

    import numpy as np
    import torch

    from unlearnable.train.loop import Recipe, train_classifier

    torch.set_num_threads(2)
    model, size = case.split("@")
    n, epochs = CASES[case]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (n, 3, int(size), int(size)), dtype=np.uint8))
    y = torch.arange(n) % 10
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    recipe = Recipe(model=model, epochs=epochs, batch_size=64)
    train_classifier(x, y, 10, recipe, eval_sets={"test": (x[:128], y[:128])})
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": round(wall, 2), "user_s": round(r1.ru_utime - r0.ru_utime, 2),
                      "sys_s": round(r1.ru_stime - r0.ru_stime, 2), "minor_faults": r1.ru_minflt - r0.ru_minflt,
                      "max_rss_mb": round(r1.ru_maxrss / 1024)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    out = {"machine": platform.machine(), "cpus": os.cpu_count(), "libc": "-".join(platform.libc_ver()),
           "load_avg_1min_at_start": os.getloadavg()[0], "cases": {}}
    for case in args.cases.split(","):
        runs: dict[str, list[dict]] = {"reference": [], "tuned": []}
        for _ in range(args.pairs):
            for arm in ("reference", "tuned"):
                env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | {"OMP_NUM_THREADS": "2"}
                if arm == "tuned":
                    env |= {"MALLOC_MMAP_THRESHOLD_": str(LIMIT), "MALLOC_TRIM_THRESHOLD_": str(LIMIT)}
                r = subprocess.run([sys.executable, __file__, "--child", case], env=env, capture_output=True,
                                   text=True, check=True)
                runs[arm].append(json.loads(r.stdout.strip().splitlines()[-1]))
        med = {arm: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "sys_s", "minor_faults", "max_rss_mb")}
               for arm, rs in runs.items()}
        out["cases"][case] = {"runs": runs, "median": med,
                              "speedup_wall": round(med["reference"]["wall_s"] / med["tuned"]["wall_s"], 2)}
        print(json.dumps({case: out["cases"][case]["median"], "speedup_wall": out["cases"][case]["speedup_wall"]}),
              file=sys.stderr, flush=True)
    out["load_avg_1min_at_end"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
