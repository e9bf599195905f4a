"""Protection on imbalanced splits: the recommended ``tiles`` against the commonest-class chance.

Medical sets are rarely balanced (two skin-lesion images in three are naevi). This bench builds imbalanced copies
of the built-in tissue patches, digits and colour photographs (the first class keeps every image its split has the
fewest of, the others a falling share each, in both splits), protects the training split with ``tiles`` at 8/255
for several keys, and trains the benchmark's converged small-CNN victim (bench/efficacy.py's recipe and
augmentation) on the protected split and, once per dataset, on the clean one, in the same process. Per run it
prints the clean and protected accuracy, chance as the product scores it (the test split's commonest class:
``audit.validity.chance_level``), the uniform 1/K beside it, and the protected victim's balanced accuracy
(mean per-class recall, which a victim that answers the commonest class cannot lift above 1/K).

    PYTHONPATH=src python bench/imbalanced.py [--keys 7,8] [--data mni-tissue,mnist5k,textures]
        [--victim smallcnn|resnet18-narrow] [--method tiles] [--out rows.jsonl]

Prints one JSON object: ``{"machine": ..., "rows": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficacy import BATCH, LR, RECIPES  # noqa: E402
from unlearnable.audit.evaluate import evaluate  # noqa: E402
from unlearnable.audit.verify import verdict  # noqa: E402
from unlearnable.data import ImageSet, load  # noqa: E402
from unlearnable.protect import protect  # noqa: E402
from unlearnable.train.defenses import parse_defense  # noqa: E402
from unlearnable.train.loop import Recipe  # noqa: E402

#: each class's share of the first class's count, per dataset (tissue: background, CSF, GM, WM)
SHARES = {"mni-tissue": (1.0, 0.45, 0.22, 0.14),
          "mnist5k": (1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.13, 0.1, 0.08, 0.06),
          "textures": (1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.13, 0.1, 0.08, 0.06)}
MIN_PER_CLASS = 5


def imbalanced(ds: ImageSet, shares: tuple[float, ...], seed: int = 0) -> ImageSet:
    """``ds`` with each split cut to ``shares`` of its smallest class count per class (seeded, at least
    :data:`MIN_PER_CLASS`), in the source's order."""
    parts = []
    for i, split in enumerate(("train", "test")):
        part = ds.split(split)
        g = torch.Generator().manual_seed(seed + i)
        top = min(int((part.labels == c).sum()) for c in range(ds.num_classes))
        pick = []
        for c, share in enumerate(shares):
            idx = (part.labels == c).nonzero().flatten()
            pick.append(idx[torch.randperm(len(idx), generator=g)[:max(MIN_PER_CLASS, round(top * share))]])
        parts.append(part.subset(torch.cat(pick).sort().values))
    tr, te = parts
    return ImageSet(torch.cat([tr.images, te.images]), torch.cat([tr.labels, te.labels]), tr.ids + te.ids,
                    tr.splits + te.splits, ds.classes, ds.layout, ds.meta)


#: the deeper victim: ResNet-18's layout at a quarter of its width (the CPU's stand-in for ResNet-18) with the
#: converged ResNet-18 recipe of bench/efficacy_sweep.py
DEEP = {"model": "resnet18-narrow", "epochs": 40, "batch_size": 64}


def recipe_for(name: str, victim: str, epochs: int | None) -> Recipe:
    if victim == "smallcnn":
        return Recipe(model="smallcnn", epochs=epochs or RECIPES[name]["epochs"], batch_size=BATCH, lr=LR, seed=0)
    if victim != DEEP["model"]:
        raise SystemExit(f"--victim {victim}: smallcnn or {DEEP['model']}")
    return Recipe(model=victim, epochs=epochs or DEEP["epochs"], batch_size=DEEP["batch_size"], lr=LR, seed=0)


def run(data: list[str], keys: list[int], epochs: int | None = None, out: Path | None = None,
        source: dict[str, str] | None = None, victim: str = "smallcnn", method: str = "tiles"
        ) -> list[dict[str, Any]]:
    """One row per dataset x key; ``epochs`` overrides the recipe's (tests), ``source`` a dataset's load spec.

    With ``out``, rows already there for the same dataset, key and epochs are kept, not run again (an interrupted
    run continues where it stopped; the clean victim's accuracy is read back from them)."""
    rows = []
    kept = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out and out.exists() else []
    for name in data:
        ds = imbalanced(load((source or {}).get(name, name)), SHARES[name])
        test = ds.split("test").labels
        recipe = recipe_for(name, victim, epochs)
        aug = [parse_defense(RECIPES[name]["aug"])]
        done = {r["key"]: r for r in kept if r.get("data") == name and r.get("epochs") == recipe.epochs
                and r.get("victim", "smallcnn") == victim and r.get("method", "tiles") == method}
        clean = next(({"acc": r["clean_acc"], "curve": [], "wall_s": 0.0} for r in done.values()), None)
        for key in keys:
            if key in done:
                rows.append(done[key])
                print(f"kept {name} key {key} from {out}", file=sys.stderr, flush=True)
                continue
            t0 = time.perf_counter()
            r = evaluate(protect(ds, method, key=key, eps=8 / 255), ds, recipe, "cpu", defenses=aug,
                         clean_result=clean)
            if clean is None:  # one clean victim per dataset: the reference every key is read against
                clean = {"acc": r["clean_acc"], "curve": r["curves"]["clean"], "wall_s": r["wall_s"]["clean"]}
            row = {"data": name, "victim": victim, "method": method, "key": key, "epochs": recipe.epochs,
                   "train": len(ds.split("train")), "test": len(test),
                   "class_counts_test": torch.bincount(test, minlength=ds.num_classes).tolist(),
                   "chance": round(r["chance_acc"], 4), "uniform": round(1 / ds.num_classes, 4),
                   "clean_acc": round(r["clean_acc"], 4), "protected_acc": round(r["protected_acc"], 4),
                   "protected_balanced_acc": r["protected_balanced_acc"],
                   "valid": r["valid"], "protected_within_10": r["protected_acc"] <= r["chance_acc"] + 0.10,
                   # protect --verify's rule: within 10 points of chance, and on an imbalanced split the balanced
                   # accuracy within 10 points of 1/K too
                   "verdict": verdict(r["clean_acc"], r["protected_acc"], r["chance_acc"],
                                      balanced=r["protected_balanced_acc"], uniform=1 / ds.num_classes)[0],
                   "s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if out:
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="mni-tissue,mnist5k")
    ap.add_argument("--keys", default="7,8")
    ap.add_argument("--victim", default="smallcnn", help=f"smallcnn (default) or {DEEP['model']}")
    ap.add_argument("--method", default="tiles", help="any method with an eps parameter (default: tiles), at 8/255")
    ap.add_argument("--out", type=Path, default=None, help="also append each row to this JSON-lines file")
    a = ap.parse_args(argv)
    rows = run(a.data.split(","), [int(k) for k in a.keys.split(",")], out=a.out, victim=a.victim,
               method=a.method)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "load_avg": os.getloadavg()[0]}
    print(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
