"""Does a protection survive a trainer who downscales? Protect at one resolution, train the victim at another.

The built-in datasets are built at ``--size`` (64 px by default: crops of the same photographs and MRI slabs as the
32-px benchmark, at twice the resolution), the training split is protected there, and a converged small CNN (the
efficacy benchmark's recipe: 30 epochs, crop pad 4 + flip, SGD lr 0.05, batch 64) trains either on the images as
written (``at=native``) or on the protected and clean images resized to ``--victim-size`` with antialiased
bilinear interpolation (``at=down``), which is what ``torchvision.transforms.Resize`` does and what
``protect --verify-size`` checks. Prints one JSON line per run.

Protections (``--specs``):

- ``clean``: no protection (the baseline at that resolution);
- ``tiles``: the product's tiles at the data's resolution (auto period: 2 px colour, 4 px grey);
- ``tiles-cell:K``: the same tiles drawn at the auto period, each tile cell K x K pixels (a coarser, blocky period
  of K times the auto one, aimed at a trainer who downscales by K);
- ``tiles-period:P``: the product's tiles with ``--param period=P`` (independent signs in a P x P tile);
- ``fine+coarse:K``: ``tiles`` and ``tiles-cell:K`` (another key) at half the budget each.

``--datasets`` takes built-in variants too (``textures:normalise=1``: every crop's colour statistics standardised).

    PYTHONPATH=src python bench/resize.py --datasets textures,mni-tissue --keys 7,8 --specs clean,tiles,tiles-cell:2 \
        --at native,down > resize.jsonl
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

from unlearnable.audit.verify import at_size
from unlearnable.data import load
from unlearnable.protect import METHODS, Key
from unlearnable.protect.base import add_within_linf
from unlearnable.protect.tiles import TileCodes, tile_noise
from unlearnable.train.defenses import parse_defense
from unlearnable.train.loop import train_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficacy_sweep import victim_recipe  # noqa: E402  (the efficacy benchmark's converged recipes)

EPS = 8 / 255


def tile_codes(train, key: Key, cell: int) -> TileCodes:
    """The product's tiles for ``train`` (auto period), each cell repeated to ``cell`` x ``cell`` pixels."""
    codes = METHODS.get("tiles")().fit(train, key)
    return TileCodes(codes.tiles.repeat_interleave(cell, -1).repeat_interleave(cell, -2), codes.seed)


def protected(train, spec: str, key_seed: int) -> torch.Tensor:
    """The training images under ``spec`` (see the module docstring), uint8."""
    if spec == "clean":
        return train.images
    name, _, arg = spec.partition(":")
    cell = int(arg) if arg else 1

    def noise(codes: TileCodes) -> torch.Tensor:
        return tile_noise(codes.tiles, train.labels, train.ids, codes.seed, train.size)

    if name == "tiles-period":
        delta = EPS * noise(METHODS.get("tiles")(period=cell).fit(train, Key.from_seed(key_seed)))
    elif name in ("tiles", "tiles-cell"):
        delta = EPS * noise(tile_codes(train, Key.from_seed(key_seed), cell if name == "tiles-cell" else 1))
    elif name == "fine+coarse":
        delta = EPS / 2 * (noise(tile_codes(train, Key.from_seed(key_seed), 1))
                           + noise(tile_codes(train, Key.from_seed(key_seed + 100), cell)))
    else:
        raise SystemExit(f"--specs {spec}: unknown (clean, tiles, tiles-period:P, tiles-cell:K, fine+coarse:K)")
    return add_within_linf(train.images, delta, EPS)


#: the largest size each built-in dataset is cut at; larger ``--size`` builds there and upsamples (antialiased
#: bilinear) before protecting, as a publisher who enlarges small crops would
BUILT_MAX = {"textures": 64, "mni-tissue": 96}


@functools.lru_cache(maxsize=2)
def _data(dataset: str, n: int, test_n: int, size: int):
    """One built dataset per (name, sizes): every run of a sweep reuses it (tissue takes seconds to build)."""
    base, _, options = dataset.partition(":")  # "textures:normalise=1": a built-in variant
    built = min(size, BUILT_MAX.get(base, size))
    ds = load(f"{base}:{options + ',' if options else ''}n={n},test={test_n},size={built}")
    return ds if built == size else at_size(ds, size)


#: victims, each trained with its converged recipe from ``efficacy_sweep.VICTIMS``
MODELS = ("smallcnn", "resnet18", "resnet18-narrow")


def run(dataset: str, size: int, victim_size: int, spec: str, key_seed: int, at: str, n: int = 2000,
        test_n: int = 500, model: str = "smallcnn") -> dict:
    ds = _data(dataset, n, test_n, size)
    train, test = ds.split("train"), ds.split("test")
    t = time.time()
    train_set = train.with_images(protected(train, spec, key_seed))
    if at == "down":
        train_set, test = at_size(train_set, victim_size), at_size(test, victim_size)
    hook = parse_defense("aug:4").hook(train.num_classes)
    recipe, _ = victim_recipe(model, 0)
    _, h = train_classifier(train_set.images, train_set.labels, train.num_classes, recipe,
                            eval_sets={"test": (test.images, test.labels)}, hooks=[hook])
    return {"data": dataset, "size": size, "spec": spec, "key": key_seed, "at": at, "model": model,
            "victim_size": victim_size if at == "down" else size, "test": round(h.epochs[-1]["test_acc"], 4),
            "train": round(h.epochs[-1]["train_acc"], 4), "chance": round(1 / train.num_classes, 4),
            "s": round(time.time() - t, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="textures,mni-tissue")
    ap.add_argument("--size", type=int, default=64, help="resolution the data is built and protected at")
    ap.add_argument("--victim-size", type=int, default=32, help="resolution of the downscaling victim (at=down)")
    ap.add_argument("--specs", default="clean,tiles")
    ap.add_argument("--keys", default="7", help="protection key seeds, comma-separated")
    ap.add_argument("--at", default="native,down", help="native, down or both")
    ap.add_argument("--n", type=int, default=2000, help="training images per dataset")
    ap.add_argument("--test", type=int, default=500, help="test images per dataset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="smallcnn", choices=MODELS,
                    help="the victim; above 64 px the ResNets use the ImageNet stem (7x7 stride-2 conv + max pool)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for dataset in a.datasets.split(","):
        for spec in a.specs.split(","):
            for key in (int(k) for k in a.keys.split(",")):
                for at in a.at.split(","):
                    print(json.dumps(run(dataset, a.size, a.victim_size, spec, key, at, a.n, a.test, a.model)),
                          flush=True)


if __name__ == "__main__":
    sys.exit(main())
