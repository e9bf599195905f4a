"""Peak resident memory of ``unlearnable protect --method cuda`` on 224x224 RGB PNG folders of 1x, 4x and 8x the
images, each run in its own child process (peak RSS from ``os.wait4``'s resource usage of that child).

Prints one JSON object; ``ratio_largest_smallest`` (8x / 1x) is the headline (target <= 1.3: memory must not grow
with the data).
    python bench/memory.py [--base 840] [--mults 1,4,8] [--keep DIR]
The images are generated once (smooth synthetic photos, PNG) and hard-linked into the three folders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_pool(folder: Path, n: int, size: int = 224) -> list[Path]:
    """``n`` distinct synthetic RGB images: smooth colour fields plus mild noise (PNG compresses them like photos),
    made from a few precomputed fields shifted per image so that generating them costs little more than the PNG
    encoding, which runs on a thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    fields = [np.stack([np.sin(a * xx + b * yy + k) for k in (0, 2, 4)], -1) * 90 + 128
              for a, b in rng.uniform(0.5, 6, (16, 2))]
    noise = rng.normal(0, 6, (size, size, 3))

    def one(i: int) -> Path:
        p = folder / f"{i:06d}.png"
        if not p.exists():
            img = np.roll(fields[i % 16], i // 16, axis=1) + np.roll(noise, i, axis=0) + (i % 7)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
        return p

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        return list(pool.map(one, range(n)))


def build_folder(root: Path, pool: list[Path], n: int, classes: int = 10) -> Path:
    """``root/{train,test}/<class>/*.png`` (80/20) from the first ``n`` pool images, hard-linked (no extra disk)."""
    for i, src in enumerate(pool[:n]):
        split = "test" if (i // classes) % 5 == 4 else "train"
        d = root / split / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        os.link(src, d / src.name)
    return root


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``cmd`` run as a child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return usage.ru_maxrss / 1024, wall  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", type=int, default=840, help="images in the 1x folder (8x: >= 6,700 = 1 GB decoded)")
    ap.add_argument("--mults", default="1,4,8", help="folder sizes to run, in multiples of --base")
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated images here between runs")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ul-mem-"))
    pool_dir = a.keep or work / "pool"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    try:
        pool = make_pool(pool_dir, max(int(m) for m in a.mults.split(",")) * a.base)
        runs = {}
        mults = [int(m) for m in a.mults.split(",")]
        for mult in mults:
            n = mult * a.base
            src = build_folder(work / f"x{mult}", pool, n)
            rss, wall = peak_rss_mb([sys.executable, "-m", "unlearnable", "protect", str(src), "-m", "cuda", "-o",
                                     str(work / f"out{mult}"), "--key", str(work / "k.key")], env)
            runs[f"{mult}x"] = {"images": n, "decoded_mb": round(n * 224 * 224 * 3 / 2**20, 1),
                                "peak_rss_mb": round(rss, 1), "wall_s": round(wall, 1)}
            shutil.rmtree(work / f"out{mult}")
        print(json.dumps({"benchmark": "memory/protect-cuda-224", "runs": runs,
                          "ratio_largest_smallest": round(runs[f"{max(mults)}x"]["peak_rss_mb"]
                                                          / runs[f"{min(mults)}x"]["peak_rss_mb"], 3)}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
