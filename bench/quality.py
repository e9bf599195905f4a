"""PSNR/SSIM speed: data/quality.py (batched torch) vs scikit-image (one image at a time), same photographs.

Prints one JSON line: seconds per call of each and the ratio skimage/ours (>1: ours is faster), plus the largest
difference seen. Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python bench/quality.py [--n 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from unlearnable.data.quality import psnr, ssim


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="images per batch (512x512 colour crops)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    photos = [skdata.astronaut(), skdata.coffee()[:400, :400], skdata.chelsea()[:300, :300]]
    clean = [photos[i % 3] for i in range(args.n)]
    prot = [np.clip(c.astype(int) + rng.integers(-8, 9, c.shape), 0, 255).astype(np.uint8) for c in clean]
    sizes = {c.shape for c in clean}
    ours_s = sk_s = 0.0
    worst = 0.0
    for shape in sizes:  # our functions take one size per batch, as the streamed pass feeds them
        idx = [i for i, c in enumerate(clean) if c.shape == shape]
        a = torch.from_numpy(np.stack([clean[i] for i in idx])).permute(0, 3, 1, 2).contiguous()
        b = torch.from_numpy(np.stack([prot[i] for i in idx])).permute(0, 3, 1, 2).contiguous()
        ours_s += _best(lambda a=a, b=b: (psnr(a, b), ssim(a, b)), args.repeat)

        def ref(idx=idx):
            return [(peak_signal_noise_ratio(clean[i], prot[i], data_range=255),
                     structural_similarity(clean[i], prot[i], data_range=255, channel_axis=2, gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False)) for i in idx]

        sk_s += _best(ref, args.repeat)
        got = ssim(a, b).tolist()
        worst = max(worst, max(abs(g - r[1]) for g, r in zip(got, ref())))
    print(json.dumps({"images": args.n, "threads": torch.get_num_threads(), "ours_s": round(ours_s, 4),
                      "skimage_s": round(sk_s, 4), "skimage_over_ours": round(sk_s / ours_s, 2),
                      "max_ssim_diff": worst}))


if __name__ == "__main__":
    main()
