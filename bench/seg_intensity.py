"""How much Dice can an eps-bounded change of the training voxels take from a victim that reads tissue by intensity?

The 3D efficacy table (docs/methods.md, "3D segmentation subjects") found every method within 1% of clean. This
benchmark measures the room there is: on the benchmark's subjects (brain-phantoms, the same split by subject id as
``protect``'s default ``--test-fraction 0.2``), it fits the best voxel-wise intensity rule (three cut points over
the 256 stored levels: background < CSF < GM < WM on T1) to the training subjects by Dice, and scores it on the
held-out ones. Then, for each budget (``eps × 255`` stored levels, the budget rule of ``protect``):

* ``threshold_shift``: the worst held-out Dice when every cut point may move by up to ``±eps`` (each independently);
* ``class_offsets``: the worst held-out Dice of the rule *refitted* to training subjects whose voxels of each class
  are moved by a class-wise offset in ``{-eps, 0, +eps}`` (81 combinations): a poisoning of the training data
  that moves a threshold learner directly;
  The worst offsets that are not one uniform shift are reported too (``nonuniform``): a reader that re-normalises
  each volume undoes a uniform shift; stored-uint8 volumes are read as they are, so for them it counts;
* ``near``: the share of brain voxels within ``eps`` of a cut point (the only ones a shift of ``eps`` relabels).

Intensity is a per-voxel feature, the simplest a segmenter can read, so it is learnt before any pattern an
additive perturbation can add (the victim in the table follows the clean loss curve from the first epoch). These
numbers say what an intensity-reading victim can lose at most under such moves; they are not a proof that no
perturbation can do more.

    PYTHONPATH=src python bench/seg_intensity.py --n 24 --size 48
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np


def class_hist(vols: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``(k, 256)`` voxel counts per class and stored level."""
    return np.stack([np.bincount(vols[labels == c], minlength=256)[:256] for c in range(k)]).astype(np.float64)


def rule_dice(hist: np.ndarray, cuts: tuple[int, ...], scored: tuple[int, ...] = (1, 2, 3),
              cum: np.ndarray | None = None) -> float:
    """Mean Dice over ``scored`` classes of the rule 'level v → number of cut points ≤ v' on per-class histograms
    (``cum``: ``hist``'s cumulative sums with a leading 0, when the caller has them)."""
    if cum is None:
        cum = np.concatenate([np.zeros((hist.shape[0], 1)), hist.cumsum(1)], 1)
    edges = (0, *sorted(min(max(int(c), 0), 256) for c in cuts), 256)  # a cut moved past its neighbour or the ends
    out = []
    for c in scored:
        a, b = edges[c], edges[c + 1]  # levels [a, b) are predicted c
        inside = cum[:, b] - cum[:, a]  # voxels of every true class predicted c
        out.append(2 * inside[c] / max(inside.sum() + cum[c, -1], 1.0))
    return float(np.mean(out))


def fit_rule(hist: np.ndarray, coarse: int = 4) -> tuple[int, ...]:
    """The cut points (c1 < c2 < c3) with the best Dice on ``hist``: a search over every ``coarse``-th level, then
    coordinate ascent over all levels."""
    cum = np.concatenate([np.zeros((hist.shape[0], 1)), hist.cumsum(1)], 1)
    grid = range(coarse, 256, coarse)
    best = max(itertools.combinations(grid, 3), key=lambda c: rule_dice(hist, c, cum=cum))
    cuts, score = list(best), rule_dice(hist, best, cum=cum)
    improved = True
    while improved:
        improved = False
        for i in range(3):
            for v in range(max(cuts[i - 1] + 1 if i else 1, cuts[i] - coarse),
                           min(cuts[i + 1] if i < 2 else 256, cuts[i] + coarse + 1)):
                trial = cuts.copy()
                trial[i] = v
                s = rule_dice(hist, tuple(trial), cum=cum)
                if s > score + 1e-12:
                    cuts, score, improved = trial, s, True
    return tuple(cuts)


def shifted(hist: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """Per-class histograms with class ``c``'s voxels moved by ``offsets[c]`` levels (clipped to 0..255)."""
    out = np.zeros_like(hist)
    for c, o in enumerate(offsets):
        idx = np.clip(np.arange(256) + o, 0, 255)
        np.add.at(out[c], idx, hist[c])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0, help="split seed (protect's --seed)")
    ap.add_argument("--eps", default="4,8,16", help="budgets in 1/255 (stored levels)")
    args = ap.parse_args()
    from unlearnable.data.phantoms import brain_phantoms
    from unlearnable.data.subjects import split_by_id

    t0 = time.perf_counter()
    s = brain_phantoms(n=args.n, size=args.size)
    splits = split_by_id(s.ids, args.test_fraction, args.seed)
    vols, labels = s.images[:, 0].numpy(), s.labels.numpy()
    tr = [i for i, sp in enumerate(splits) if sp == "train"]
    te = [i for i, sp in enumerate(splits) if sp == "test"]
    k = s.num_classes
    h_tr, h_te = class_hist(vols[tr], labels[tr], k), class_hist(vols[te], labels[te], k)
    cuts = fit_rule(h_tr)
    base = rule_dice(h_te, cuts)
    brain_te = h_te[1:].sum(0)
    out: dict = {"benchmark": "seg_intensity", "data": f"brain-phantoms:n={args.n},size={args.size}",
                 "train": len(tr), "test": len(te), "cuts": list(cuts), "train_dice": round(rule_dice(h_tr, cuts), 4),
                 "test_dice": round(base, 4), "budgets": {}}
    for e in (int(x) for x in args.eps.split(",")):
        worst_shift = min(rule_dice(h_te, tuple(c + d * e for c, d in zip(cuts, ds)))
                          for ds in itertools.product((-1, 0, 1), repeat=3))
        refit = {offs: rule_dice(h_te, fit_rule(shifted(h_tr, offs), coarse=8))
                 for offs in itertools.product((-e, 0, e), repeat=k)}
        which = min(refit, key=refit.get)
        worst_off = refit[which]
        # a uniform shift of every voxel is undone by any reader that re-normalises each volume (z-score, or the
        # percentile window for scanner data); the worst offsets that are not uniform survive such readers
        mixed = min((o for o in refit if len(set(o)) > 1), key=refit.get)
        near = sum(brain_te[max(c - e + 1, 0):min(c + e, 256)].sum() for c in cuts) / brain_te.sum()
        out["budgets"][f"{e}/255"] = {"threshold_shift_dice": round(worst_shift, 4),
                                      "threshold_shift_ratio": round(worst_shift / base, 3),
                                      "class_offsets_dice": round(worst_off, 4),
                                      "class_offsets_ratio": round(worst_off / base, 3),
                                      "worst_offsets": list(which),
                                      "class_offsets_nonuniform_dice": round(refit[mixed], 4),
                                      "class_offsets_nonuniform_ratio": round(refit[mixed] / base, 3),
                                      "worst_nonuniform_offsets": list(mixed),
                                      "near": round(float(near), 4)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
