"""Partial protection (``--mix R``): how low any protection can take a victim when part of the training set is clean.

An unlearnable example works by teaching nothing, so when a fraction ``1 - R`` of the rows stays clean the victim
still learns from those rows: its accuracy cannot fall below that of a victim trained on the clean rows *alone*
unless the protected rows actively mislead it (a poison that teaches wrong features). This benchmark measures
that floor beside each protection at full and partial strength, on a seeded subset of each built-in dataset.

Rows per dataset: ``clean`` (every row clean), ``clean rows only`` (the rows ``--mix R`` leaves clean, alone:
the floor, trained for as many SGD steps as the other rows), then each spec at mix 1 and at mix R. The protected
rows are the ones the audit picks (``audit.evaluate.mix_indices``, seed 0). Small CNN, crop/flip as in the
efficacy benchmark, final-epoch accuracy on the clean test split. One JSON object per dataset goes to stdout.

    PYTHONPATH=src python bench/efficacy_sweep.py export DATA      # once: the built-in splits as tensors
    PYTHONPATH=src python bench/partial.py --data DATA [--datasets mnist5k,mni-tissue,textures] [--n 1000]
        [--mix 0.5] [--epochs 10] [--specs "tiles;em;beo,eps=16/255;adv;random"] [--key 7]
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

SPECS = ("tiles", "em", f"beo,eps={16 / 255!r}", "adv", "random")


def run(data_dir: str, name: str, specs: list[str], n: int, mix: float, epochs: int, key: int) -> dict:
    from unlearnable.audit.evaluate import clean_rows, mix_indices
    from unlearnable.data.quality import psnr
    from unlearnable.protect import METHODS, Key
    tr, te_im, te_lab = S._load(data_dir, name)
    tr = S.seeded_subset(tr, n)
    k = tr.num_classes
    rows, keep = mix_indices(len(tr), mix, 0), clean_rows(len(tr), mix, 0)
    if not len(keep):
        raise SystemExit(f"--mix {mix}: protects all {len(tr)} rows of {name}; no clean rows are left to train on")
    out: dict = {"data": name, "n": len(tr), "mix": mix, "protected_rows": len(rows), "epochs": epochs, "key": key,
                 "chance": round(float(torch.bincount(te_lab).max()) / len(te_lab), 4),
                 "clean": S.train_small(tr.images, tr.labels, k, name, te_im, te_lab, epochs),
                 # the floor, trained for the same number of SGD steps as every other row (more epochs over fewer rows)
                 "clean_rows_only": S.train_small(tr.images[keep], tr.labels[keep], k, name, te_im, te_lab,
                                                  max(1, round(epochs * len(tr) / len(keep)))),
                 "specs": {}}
    for spec in specs:
        method, params = S.parse_spec(spec)
        if method == "adv" and name == "mnist5k":
            params.setdefault("flip", "false")  # the digit victims do not flip
        t = time.time()
        algo = METHODS.get(method)(**params)
        prot = algo.apply(tr, algo.fit(tr, Key.from_seed(key)))
        fit_s = round(time.time() - t, 1)
        mixed = tr.images.clone()
        mixed[rows] = prot[rows]
        out["specs"][spec] = {"full": S.train_small(prot, tr.labels, k, name, te_im, te_lab, epochs),
                              "mix": S.train_small(mixed, tr.labels, k, name, te_im, te_lab, epochs),
                              "psnr": round(float(psnr(tr.images, prot).clamp(max=99).mean()), 1), "fit_s": fit_s}
        print(json.dumps({"data": name, "spec": spec, **out["specs"][spec]}), file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder written by `efficacy_sweep.py export`")
    ap.add_argument("--datasets", default="mnist5k,mni-tissue,textures")
    ap.add_argument("--specs", default=";".join(SPECS), help="protection specs separated by ';'")
    ap.add_argument("--n", type=int, default=1000, help="training images per dataset (seeded subset)")
    ap.add_argument("--mix", type=float, default=0.5, help="fraction of the rows protected")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--key", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if not 0.0 < a.mix < 1.0:
        raise SystemExit(f"--mix {a.mix}: must be in (0, 1)")
    torch.set_num_threads(a.threads)
    for name in a.datasets.split(","):
        specs = [s for s in a.specs.split(";") if s]  # --specs "": the two clean rows alone
        print(json.dumps(run(a.data, name, specs, a.n, a.mix, a.epochs, a.key)), flush=True)


if __name__ == "__main__":
    main()
