"""How much of a victim's decision follows the tiles, epoch by epoch.

A victim is trained on a `tiles`-protected training split (the benchmark's crop/flip recipe, `efficacy_sweep.VICTIMS`)
and after every epoch it is scored on three sets built from the clean test split:

- ``test``: the clean test images (the number the efficacy benchmark reports);
- ``swap``: the same images carrying the tile of the *next* class ``(y + 1) mod K``, labelled with that class: a
  victim that reads the tile says the tile's class, one that reads the image says ``y`` (then ``swap`` is near 0);
- ``tile``: the tile alone on mid-grey, labelled with the tile's class (the shortcut without any image).

``swap`` near 1 means the victim has learnt the tiles as its rule; near 0 means it has learnt the images and ignores
the tiles, whatever its clean-test accuracy says. The rows are JSON lines (one per run, every epoch's numbers).

    python bench/efficacy_sweep.py export DATA          # once, on a machine with the datasets' packages
    python bench/shortcut.py --data DATA --datasets textures,mni-tissue --victims smallcnn,resnet18-narrow \\
        --keys 7 --out shortcut.jsonl

``--data flat`` is the learnability screen: images that carry nothing but one random colour level per channel and
image (40-215) plus the class tile (2,000 training and 300 test images of 32 px, 10 classes; ``--epochs 10``), so a
victim can only learn the tile, against the brightness variation every real dataset has. Victims may also be the
pooling variants below (``POOL_VARIANTS``, registered here for the bench only): they change one thing about a
registered network, to show that a max pool at full resolution is what lets a victim read an 8/255 tile:

    python bench/shortcut.py --data flat --datasets flat --victims resnet18-narrow,resnet18-narrow+maxpool \\
        --epochs 10 --out flat.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import efficacy_sweep as E  # noqa: E402


def _maxpool_after_stem(in_channels: int, num_classes: int, image_size: int):
    """``resnet18-narrow`` with one 2x2 max pool after its stem's ReLU (the CIFAR stem has none)."""
    from torch import nn

    from unlearnable.models.classifiers import resnet18_narrow
    m = resnet18_narrow(in_channels, num_classes, image_size)
    layers = list(m.features[0].children())
    m.features[0] = nn.Sequential(*layers[:3], nn.MaxPool2d(2), *layers[3:])
    return m


def _average_pools(in_channels: int, num_classes: int, image_size: int):
    """``smallcnn`` with its two max pools replaced by average pools (linear: no rectification)."""
    from torch import nn

    from unlearnable.models.classifiers import smallcnn
    m = smallcnn(in_channels, num_classes, image_size)
    m.features[0] = nn.Sequential(*[nn.AvgPool2d(2) if isinstance(layer, nn.MaxPool2d) else layer
                                    for layer in m.features[0].children()])
    return m


def _imagenet_stem(in_channels: int, num_classes: int, image_size: int):
    """``resnet18-narrow`` with the ImageNet stem (7x7 stride-2 convolution, then a 3x3 stride-2 max pool) at any
    size; the product builds it above 64 px."""
    from unlearnable.models.classifiers import SMALL, resnet18_narrow
    return resnet18_narrow(in_channels, num_classes, max(image_size, SMALL + 1))


POOL_VARIANTS = {"resnet18-narrow+maxpool": _maxpool_after_stem, "smallcnn+avgpool": _average_pools,
                 "resnet18-narrow+imagenet-stem": _imagenet_stem}


def register_variants() -> None:
    """Make :data:`POOL_VARIANTS` buildable by name (models registry) and trainable (``efficacy_sweep.VICTIMS``,
    the converged ResNet-18 recipe); a no-op when already done."""
    from unlearnable.models import MODELS
    for name, build in POOL_VARIANTS.items():
        if name not in MODELS:
            MODELS.register(name)(build)
        E.VICTIMS.setdefault(name, dict(E.R18))


def unregister_variants() -> None:
    """Undo :func:`register_variants` (the registry is shared by everything in the process)."""
    from unlearnable.models import MODELS
    for name in POOL_VARIANTS:
        MODELS.unregister(name)
        E.VICTIMS.pop(name, None)


def flat_data(n: int = 2000, test: int = 300, k: int = 10, channels: int = 3, size: int = 32, lo: int = 40,
              hi: int = 215, seed: int = 1):
    """The screen's data: (train ImageSet, test images, test labels), every image one random level per channel in
    ``lo..hi``, labels round-robin; train and test from different seeds."""
    from unlearnable.data import ImageSet

    def draw(count: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(s)
        level = torch.randint(lo, hi + 1, (count, channels, 1, 1), generator=g).to(torch.uint8)
        return level.expand(count, channels, size, size).contiguous(), torch.arange(count) % k

    im, lab = draw(n, seed)
    te_im, te_lab = draw(test, seed + 1)
    tr = ImageSet(im, lab, tuple(f"{i:06d}" for i in range(n)), ("train",) * n, tuple(str(c) for c in range(k)))
    return tr, te_im, te_lab


def probe_sets(tiles: torch.Tensor, seed: int, eps: float, te_im: torch.Tensor, te_lab: torch.Tensor
               ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The three evaluation sets above for tile codes ``tiles`` ``(K, C, p, p)`` (phases from ``seed`` and ids
    ``t000000``..), uint8 like the images."""
    from unlearnable.protect.base import add_within_linf
    from unlearnable.protect.tiles import tile_noise
    k = tiles.shape[0]
    nxt = (te_lab + 1) % k
    ids = tuple(f"t{i:06d}" for i in range(len(te_lab)))
    noise = tile_noise(tiles, nxt, ids, seed, tuple(te_im.shape[-2:])) * eps
    grey = torch.full_like(te_im, 128)
    return {"test": (te_im, te_lab), "swap": (add_within_linf(te_im, noise, eps), nxt),
            "tile": (add_within_linf(grey, noise, eps), nxt)}


def run_one(name: str, victim: str, spec: str, key: int, data: tuple, vseed: int = 0,
            epochs: int | None = None) -> dict[str, Any]:
    """Protect ``data`` (train ImageSet, test images, test labels) with ``spec`` (a `tiles` spec) and key ``key``,
    train ``victim`` (seed ``vseed``) on it and return every epoch's ``test``/``swap``/``tile`` accuracy."""
    tr, te_im, te_lab = data
    if E.parse_spec(spec)[0] != "tiles":
        raise SystemExit(f"{spec}: the probe needs the class tiles of a `tiles` protection")
    recipe, aug = E.victim_recipe(victim, vseed, epochs)
    t = time.time()
    _, _, h, fit_s = E.protect_and_train(
        name, spec, tr, te_im, te_lab, recipe, key, aug=aug,
        probes=lambda algo, pert: probe_sets(pert.tiles, pert.seed, algo.params.eps, te_im, te_lab))
    row: dict[str, Any] = {"data": name, "victim": victim, "spec": spec, "key": key, "vseed": vseed,
                           "epochs": len(h.epochs), "train_s": round(time.time() - t - fit_s, 1)}
    for s in ("test", "swap", "tile"):
        row[s] = [round(e[f"{s}_acc"], 3) for e in h.epochs]
    row["train"] = round(h.epochs[-1]["train_acc"], 4)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder written by `efficacy_sweep.py export`, or `flat` for the "
                    "learnability screen (random colour levels plus the tile)")
    ap.add_argument("--datasets", default="textures,mni-tissue,mnist5k")
    ap.add_argument("--victims", default="smallcnn,resnet18-narrow")
    ap.add_argument("--spec", default="tiles")
    ap.add_argument("--keys", default="7")
    ap.add_argument("--epochs", type=int, default=None, help="override the victims' epochs (a quicker look)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    register_variants()
    for name in a.datasets.split(","):
        data = flat_data() if a.data == "flat" else E._load(a.data, name)
        for victim in a.victims.split(","):
            for key in (int(k) for k in a.keys.split(",")):
                row = run_one(name, victim, a.spec, key, data, epochs=a.epochs)
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps({k: (v[-1] if isinstance(v, list) else v) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
