"""Generation cost of the gradient-based protections: seconds per 1,000 images and peak memory, EM vs BEO.

Each (method, image size) runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its own.
Default parameters of both methods; random images, 10 classes. Prints one JSON object; ``beo_over_em`` is the
ratio of BEO's to EM's time at the same size (the issue asks for "no more than a few times EM").

    PYTHONPATH=src python bench/gradient.py [--n 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from unlearnable.data import ImageSet
from unlearnable.protect import METHODS, Key
method, n, c, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
img = torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)
ds = ImageSet(img, torch.arange(n) % 10, tuple(map(str, range(n))), ("train",) * n, tuple("0123456789"))
algo = METHODS.get(method)()
t0 = time.perf_counter()
algo.apply(ds, algo.fit(ds, Key.from_seed(0)))
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rounds": getattr(algo, "rounds", None)}))
"""


def run(method: str, n: int, c: int, size: int, threads: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, method, str(n), str(c), str(size), str(threads)],
                         capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {"method": method, "images": n, "shape": [c, size, size], "s_per_1000": round(1000 * out["seconds"] / n, 2),
            "peak_rss_mib": round(out["peak_rss_mib"], 1), "em_rounds": out["rounds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="images per run (time is reported per 1,000)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    a = ap.parse_args()
    rows = [run(m, a.n, c, s, a.threads) for c, s in ((1, 28), (3, 32)) for m in ("em", "beo")]
    ratio = {f"{r['shape'][1]}x{r['shape'][2]}": None for r in rows}
    for key in ratio:
        t = {r["method"]: r["s_per_1000"] for r in rows if f"{r['shape'][1]}x{r['shape'][2]}" == key}
        ratio[key] = round(t["beo"] / t["em"], 2)
    import platform

    import torch

    print(json.dumps({"bench": "gradient", "torch": torch.__version__, "threads": a.threads,
                      "cpu": platform.processor() or platform.machine(), "results": rows, "beo_over_em": ratio},
                     indent=2))


if __name__ == "__main__":
    main()
