"""Protections against a victim that trains adversarially: EM, robust EM (``em --param robust=r``) and tiles.

For each dataset a seeded subset of the training split is protected with each spec (one key), then a small CNN is
trained on it with the benchmark's crop/flip augmentation, with no further defence and with PGD adversarial
training at each radius (``at:linf:R``, 5 steps), and scored on the clean test split. The clean row is the
baseline of each column. One JSON object per (dataset, spec) goes to stdout as it finishes.

    PYTHONPATH=src python bench/efficacy_sweep.py export DATA      # once: the built-in splits as tensors
    PYTHONPATH=src python bench/robust_em.py --data DATA [--datasets mnist5k,mni-tissue] [--n 1000] [--epochs 10]
        [--specs clean,tiles,em,em,robust=4/255] [--defences none,at:linf:2/255,at:linf:4/255] [--key 7]

Specs are separated by ``;`` when they hold commas (``--specs "clean;em;em,robust=4/255,robust_steps=3"``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import efficacy_sweep as S  # noqa: E402

REM = "em,robust=4/255,robust_steps=3"
SPECS = ("clean", "tiles", "em", REM)
DEFENCES = ("none", "at:linf:2/255", "at:linf:4/255")


def run(data_dir: str, name: str, spec: str, defences: list[str], n: int, epochs: int, key: int) -> dict:
    from unlearnable.data.quality import psnr
    from unlearnable.protect import METHODS, Key
    tr, te_im, te_lab = S._load(data_dir, name)
    tr = S.seeded_subset(tr, n)
    t = time.time()
    if spec == "clean":
        imgs = tr.images
    else:
        method, params = S.parse_spec(spec)
        algo = METHODS.get(method)(**params)
        imgs = algo.apply(tr, algo.fit(tr, Key.from_seed(key)))
    fit_s = time.time() - t
    row: dict = {"data": name, "spec": spec, "n": len(tr), "epochs": epochs, "key": key, "fit_s": round(fit_s, 1),
                 "psnr": None if spec == "clean" else round(float(psnr(tr.images, imgs).clamp(max=99).mean()), 1),
                 "chance": round(float(torch.bincount(te_lab).max()) / len(te_lab), 4), "test": {}, "train_s": {}}
    for d in defences:
        t = time.time()
        row["test"][d] = S.train_small(imgs, tr.labels, tr.num_classes, name, te_im, te_lab, epochs, d)
        row["train_s"][d] = round(time.time() - t, 1)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder written by `efficacy_sweep.py export`")
    ap.add_argument("--datasets", default="mnist5k,mni-tissue")
    ap.add_argument("--specs", default=";".join(SPECS))
    ap.add_argument("--defences", default=",".join(DEFENCES))
    ap.add_argument("--n", type=int, default=1000, help="training images per dataset (seeded subset)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--key", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    specs = a.specs.split(";") if ";" in a.specs else a.specs.split(",")
    for name in a.datasets.split(","):
        for spec in specs:
            print(json.dumps(run(a.data, name, spec, a.defences.split(","), a.n, a.epochs, a.key)), flush=True)


if __name__ == "__main__":
    main()
