"""Which classes the images' own colour names, and whether those are the classes protected victims keep.

For each benchmark dataset this runs the colour-cue check that ``protect --verify`` writes beside its verdict
(:mod:`unlearnable.audit.cues`: a linear classifier on each channel's mean and standard deviation, fitted on the
clean training split and scored on the clean test split; each class's mean-colour distance to the nearest other
class against ``2 x eps x 255`` grey levels), and two measurements around it:

* ``shifted``: the same classifier refitted to training images moved by a class-wise constant of ``+-eps`` per
  channel, the signs searched (random starts, then coordinate descent) for the lowest clean-test accuracy: how much
  moving each class's mean colour within the budget can take from a victim that reads colour (the lowest found,
  not a proven minimum);
* ``--rows FILE,...``: the runs of ``bench/efficacy_sweep.py`` kept in ``bench/rows/`` (each with its clean-test
  confusion matrix): for every protected run, the classes its victim still tells apart (recall and precision
  > 50%), and how many of those the colour check names.

    PYTHONPATH=src python bench/colour_cues.py --rows bench/rows/gpu8.jsonl,bench/rows/gpu9.jsonl,... \
        --figure docs/figures/colour_cues.png
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from unlearnable.audit.classes import classes_learnt, per_class
from unlearnable.audit.cues import colour_cues, colour_features, fit_softmax
from unlearnable.data import ImageSet, load
from unlearnable.utils import parse_number

DATASETS = ("mni-tissue", "textures", "mnist5k")


def shifted(ds: ImageSet, eps: float, starts: int = 8, sweeps: int = 2, seed: int = 0) -> dict[str, Any]:
    """The lowest clean-test accuracy found for the colour classifier refitted to training images moved by a
    class-wise constant of ``+-eps x 255`` levels per channel (rounded, clipped to 0..255): the largest move of each
    class's mean colour the budget allows, searched over the signs."""
    k, c = ds.num_classes, ds.channels
    tr, te = ds.indices("train"), ds.indices("test")
    x_tr, y_tr, y_te = ds.images[tr].float(), ds.labels[tr], ds.labels[te]
    f_te = colour_features(ds.images[te])
    step = round(eps * 255)

    def acc(signs: torch.Tensor) -> float:
        x = (x_tr + step * signs[y_tr][:, :, None, None]).clamp(0, 255).to(torch.uint8)
        return float((fit_softmax(colour_features(x), y_tr, k)(f_te) == y_te).double().mean())

    g = torch.Generator().manual_seed(seed)
    draws = [torch.randint(0, 2, (k, c), generator=g).float() * 2 - 1 for _ in range(starts)]
    a, signs = min(((acc(s), s) for s in draws), key=lambda t: t[0])
    for _ in range(sweeps):
        for i in range(k):
            for j in range(c):
                trial = signs.clone()
                trial[i, j] *= -1
                b = acc(trial)
                if b < a:
                    a, signs = b, trial
    return {"acc": round(a, 4), "signs": signs.long().tolist(), "clean_acc": round(acc(torch.zeros(k, c)), 4)}


def leaks(rows: list[dict[str, Any]], classes: tuple[str, ...], named: list[str], chance: float) -> dict[str, Any]:
    """Over protected runs (``spec`` not ``clean``): how often each class is still told apart, and the share of those
    that colour names, for the runs above the goal (chance + 10 points) and for all."""
    out: dict[str, Any] = {"runs": 0, "above_goal": 0, "learnt": Counter(), "learnt_named": 0, "learnt_total": 0,
                           "above_learnt_named": 0, "above_learnt_total": 0}
    for r in rows:
        if r.get("spec") == "clean" or not r.get("confusion"):
            continue
        learnt = classes_learnt(per_class(r["confusion"], classes))
        above = r["test"] > chance + 0.10
        out["runs"] += 1
        out["above_goal"] += above
        out["learnt"].update(learnt)
        hit = sum(c in named for c in learnt)
        out["learnt_named"] += hit
        out["learnt_total"] += len(learnt)
        if above:
            out["above_learnt_named"] += hit
            out["above_learnt_total"] += len(learnt)
    out["learnt"] = dict(out["learnt"].most_common())
    return out


def draw(result: dict[str, Any], path: str | Path) -> None:
    """One panel per dataset with recorded runs: each class's recall by colour alone (bars) and the share of protected
    runs whose victim still told it apart (dots), classes sorted by the latter."""
    from unlearnable.report import pyplot
    plt = pyplot()
    sets = [(n, e) for n, e in result["datasets"].items() if e.get("runs", {}).get("runs")]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.4), squeeze=False)
    for ax, (name, e) in zip(axes[0], sets, strict=True):
        runs = e["runs"]
        rows = sorted(e["per_class"], key=lambda r: -runs["learnt"].get(r["class"], 0))
        x = range(len(rows))
        named = set(e["named"])
        ax.bar(x, [r["recall"] for r in rows], color=["#4c72b0" if r["class"] in named else "#c0c0c0" for r in rows],
               label="recall by colour alone (blue: named)")
        ax.plot(x, [runs["learnt"].get(r["class"], 0) / runs["runs"] for r in rows], "o", color="#dd5555",
                label="share of protected runs that kept it")
        ax.set_xticks(list(x), [r["class"] for r in rows], rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name}: colour alone {e['acc']:.0%} (chance {e['chance']:.0%}); {runs['runs']} protected runs",
                     fontsize=9)
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--eps", default="8/255")
    p.add_argument("--rows", default="", help="comma-separated JSON-lines files of bench/efficacy_sweep.py")
    p.add_argument("--out", default=None)
    p.add_argument("--figure", default=None, help="PNG: per class, recall by colour alone, share of runs that kept it")
    a = p.parse_args(argv)
    eps = parse_number(a.eps, "--eps")
    rows = [json.loads(line) for f in filter(None, a.rows.split(",")) for line in Path(f).read_text().splitlines()
            if line.strip()]
    result: dict[str, Any] = {"eps": a.eps, "datasets": {}}
    for name in a.datasets.split(","):
        t = time.perf_counter()
        ds = load(name)
        cues = colour_cues(ds, "test", eps)
        entry = {"acc": cues["acc"], "chance": cues["chance"], "named": cues["named"],
                 "apart_beyond_budget": cues["apart_beyond_budget"],
                 "per_class": [{k: r[k] for k in ("class", "recall", "precision", "nearest", "gap_levels")}
                               for r in cues["per_class"]],
                 "shifted": shifted(ds, eps), "wall_s": 0.0}
        mine = [r for r in rows if r.get("data") == name]
        if mine:
            entry["runs"] = leaks(mine, ds.classes, cues["named"], cues["chance"])
        entry["wall_s"] = round(time.perf_counter() - t, 1)
        result["datasets"][name] = entry
        print(json.dumps({name: entry}), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))
    if a.figure:
        draw(result, a.figure)
    return result


if __name__ == "__main__":
    main()
