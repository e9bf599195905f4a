"""Hand-written image ops vs torchvision's, on real photographs: agreement and speed, measured in one process.

The defences use JPEG round trips, Gaussian blur, Mixup and CutMix. Where torchvision has a well-kept equivalent
that agrees and is at least as fast, the defence uses it; this prints the evidence as JSON.

    PYTHONPATH=src python bench/library_ops.py [--n 256] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch


def _photos(n: int, size: int) -> torch.Tensor:
    """``n`` RGB crops ``(n, 3, size, size)`` uint8 from the photographs in scikit-image's wheel."""
    from skimage import data
    srcs = [torch.from_numpy(getattr(data, k)()).permute(2, 0, 1) for k in ("astronaut", "coffee", "chelsea",
                                                                            "rocket")]
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        s = srcs[i % len(srcs)]
        y = int(torch.randint(0, s.shape[1] - size, (), generator=g))
        x = int(torch.randint(0, s.shape[2] - size, (), generator=g))
        out.append(s[:3, y:y + size, x:x + size])
    return torch.stack(out).contiguous()


def _time(fn, reps: int = 3) -> float:
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _tv_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """torchvision's batched libjpeg round trip of uint8 ``(N, 3, H, W)``."""
    from torchvision.io import decode_jpeg, encode_jpeg
    return torch.stack(decode_jpeg(encode_jpeg(list(images), quality=quality)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    import torchvision.transforms.v2.functional as TF

    from unlearnable.train.defenses import jpeg, parse_defense
    x = _photos(a.n, a.size)
    res: dict = {"n": a.n, "size": a.size, "threads": torch.get_num_threads()}
    for q in (10, 75):
        ours, tv = jpeg(x, q), _tv_jpeg(x, q)  # the defence's jpeg is a PIL round trip
        res[f"jpeg_q{q}"] = {"pil_s": _time(lambda q=q: jpeg(x, q)),
                             "torchvision_s": _time(lambda q=q: _tv_jpeg(x, q)),
                             "max_abs_diff": int((ours.int() - tv.int()).abs().max()),
                             "identical": bool(torch.equal(ours, tv))}
    for s in (1.0, 2.0):
        r = max(1, math.ceil(2 * s))
        blur = parse_defense(f"blur:{s:g}")  # ours: replicate padding, any kernel width

        def tv_blur(s: float = s, r: int = r) -> torch.Tensor:
            return TF.gaussian_blur(x, [2 * r + 1] * 2, [s, s])

        d = (blur.transform(x).int() - tv_blur().int()).abs()
        res[f"blur_sigma{s:g}"] = {"ours_s": _time(lambda b=blur: b.transform(x)), "torchvision_s": _time(tv_blur),
                                   "max_abs_diff": int(d.max()), "interior_max_abs_diff": int(d[..., r:-r, r:-r].max())}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
