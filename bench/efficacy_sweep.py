"""Efficacy sweep on one accelerator: many (dataset, victim, protection) jobs in parallel worker processes.

Small victims (32 px, 2,000 images) leave a large GPU idle, so this runner keeps several trainings in flight on the
same device and writes one JSON line per finished job. It complements ``bench/efficacy.py`` (one job at a time,
Markdown table): the same built-in datasets, crop/flip augmentation (digits: crop only) and clean test splits, with
victim recipes long enough to converge on clean data (``VICTIMS``). A machine without the datasets' source packages
(nilearn) runs it from files written by ``export`` on a machine that has them.

    python bench/efficacy_sweep.py export DATA_DIR
    python bench/efficacy_sweep.py run --data DATA_DIR --grid gpu1 --workers 8 --budget-s 330 --out rows.jsonl
    python bench/efficacy_sweep.py table rows.jsonl          # Markdown, one row per job
    python bench/efficacy_sweep.py cue DATA_DIR              # accuracy from per-image colour statistics alone
    python bench/efficacy_sweep.py figure rows.jsonl [more.jsonl ...] --out runs.png   # every run as a dot

Jobs are ordered most important first; a job still queued when ``--budget-s`` runs out is skipped (the JSON lines
say which ran). Each job: the protection is fitted with key ``7 + seed`` on the training split (ids ``000000``..),
a victim is trained from scratch, and its final-epoch accuracy on the clean test split is reported with the best
epoch's, the train accuracy, PSNR of the protected training images and the fit/train seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

DATASETS = ("mni-tissue", "textures", "mnist5k")
R18 = {"epochs": 40, "batch_size": 64, "lr": 0.05}  # the converged ResNet-18 recipe, shared by the deeper victims
VICTIMS = {"smallcnn": {"epochs": 30, "batch_size": 64, "lr": 0.05},
           "resnet18": dict(R18),
           # ResNet-18's layout at a quarter of its width: the CPU's stand-in for the ResNet-18 victim
           "resnet18-narrow": dict(R18),
           # the victim of `make demo` and `protect --verify` until they moved to 16 epochs: crop (pad 4) + flip on
           # every dataset; and the victim since (audit.verify.VERIFY_EPOCHS)
           "smallcnn8": {"model": "smallcnn", "epochs": 8, "batch_size": 64, "lr": 0.05, "aug": "aug"},
           "smallcnn16": {"model": "smallcnn", "epochs": 16, "batch_size": 64, "lr": 0.05, "aug": "aug"},
           # the converged small CNN trained with torchvision's ImageNet augmentation (random resized crop, scale
           # 0.08-1, and flip) instead of crop/flip: every crop enlarged by up to 3.5x
           "smallcnn-rrc": {"model": "smallcnn", "epochs": 30, "batch_size": 64, "lr": 0.05, "aug": "rrc"},
           # more of the registered architectures, with ResNet-18's recipe (grid `victims`)
           **{m: dict(R18) for m in ("vgg16", "densenet121", "mobilenetv2", "resnet50")}}
AUG = {"mnist5k": "aug:2:flip=false"}  # digits are not mirror-symmetric
E4, E8, E16 = (f"{e / 255!r}" for e in (4, 8, 16))
TILE_EM = "em,init=tiles,augment=4,min_rounds=5"
# the clean victim and the default tiles over keys 7-9 (seeds 0-2): the start of every held-out grid
CLEAN_TILES3 = (("clean", 0), ("tiles", 0), ("tiles", 1), ("tiles", 2))
GRIDS = ("gpu1", "gpu2", "gpu3", "gpu4", "gpu5", "gpu6", "gpu7", "gpu8", "levels", "levels-colour", "levels-demo",
         "levels-r18", "textures-tiled", "gpu9", "gpu10", "rrc", "gpu11", "victims", "colour-removed", "pil",
         "pil-r18", "jpeg", "oppose", "oppose-r18", "walsh", "walsh-r18", "gpu12", "gpu13", "held-out",
         "held-out-norm", "held-out-r18", "textures-lum")
# The photographs without the colour cues that name them (docs/benchmarks.md, "Colour taken away"): the same crops
# with every crop's channels standardised, and in grey as well; the tissue patches each standardised; exported
# beside DATASETS under these names.
VARIANTS = {"textures-norm": "textures:normalise=1", "textures-grey": "textures:grey=1,normalise=1",
            "mni-tissue-norm": "mni-tissue:normalise=1",
            # the held-out check: photographs no default was chosen on (docs/benchmarks.md, "Held-out data")
            "grey-photos": "grey-photos", "grey-photos-norm": "grey-photos:normalise=1",
            # the benchmark's photographs in grey, not standardised: is grey what makes the held-out set hard?
            "textures-lum": "textures:grey=1"}


def adv_from_tiles(data: str, init: str = "tiles") -> str:
    """``adv`` started from the tiles (``init``: ``tiles``, the spread levels, or ``tiles-colour``), without the
    mirror in its attack on the digits (their victims do not flip)."""
    return f"adv,init={init}" + (",flip=false" if data == "mnist5k" else "")


def grid(name: str) -> list[tuple]:
    """The named job lists that were run (docs/benchmarks.md cites them by name). A bare ``tiles`` is the default of
    the release that ran the grid: ``levels=random`` up to ``gpu4``, ``spread`` up to ``gpu7``, ``colour`` from
    ``levels-colour`` to ``jpeg`` and ``oppose`` from ``oppose`` on (docs/benchmarks.md says which)."""
    if name == "gpu1":
        first = ["clean", "tiles", TILE_EM, "ar", "em", "em,augment=4"]
        second = ["tiles,period=3", "tiles,period=4", "em,init=tiles,min_rounds=5", "random", "lsp", "ops",
                  f"cuda,eps={E8}", f"tiles,eps={E4}", f"tiles,eps={E16}", f"{TILE_EM},eps={E4}"]
        jobs = [(d, v, s, 0) for specs in (first, second) for v in ("resnet18", "smallcnn") for d in DATASETS
                for s in specs]
        return jobs + [(d, v, "tiles,period=2", 0) for v in ("resnet18", "smallcnn") for d in DATASETS[::2]]
    if name == "gpu2":
        specs = [f"{TILE_EM},saturate=true", f"{TILE_EM},surrogate=resnet18",
                 f"{TILE_EM},surrogate=resnet18,saturate=true", "em,augment=4,min_rounds=5,surrogate=resnet18"]
        return [(d, v, s, 0) for v in ("resnet18", "smallcnn") for s in specs for d in DATASETS]
    if name == "gpu3":
        # How much one seed says: the ResNet-18 rows of gpu1 again with two more seeds; then the adversarial
        # poisons (`adv`) with both surrogates, a tile start and the untargeted variant, on every victim.
        seeds = [(d, "resnet18", s, seed) for seed in (1, 2) for s in ("clean", "tiles", TILE_EM) for d in DATASETS]
        advs = ["adv", "adv,surrogate=resnet18", "adv,target=own", "adv,init=tiles", "adv,target=away"]
        adv = [(d, v, s + (",flip=false" if d == "mnist5k" else ""), 0) for s in advs for v in ("resnet18", "smallcnn")
               for d in DATASETS]
        return adv[:18] + seeds + adv[18:] + [(d, "smallcnn", f"uc,eps={E16}", 0) for d in DATASETS]
    if name == "gpu4":
        # `adv` against ResNet-18: two more seeds, a longer attack on a longer-trained surrogate, 4/255 and 16/255,
        # and the attack without its crop/flip expectation.
        specs = [("adv", 1), ("adv", 2), ("adv,epochs=30,steps=100", 0), ("adv,init=tiles", 1),
                 (f"adv,eps={E16}", 0), (f"adv,eps={E4}", 0), ("adv,augment=0", 0)]
        return [(d, "resnet18", s + (",flip=false" if d == "mnist5k" and "augment=0" not in s else ""), seed)
                for s, seed in specs for d in DATASETS]
    if name == "levels":
        # CPU-sized: tiles with each class's tile mean spread apart (the default) against i.i.d. signs (the earlier
        # draw), several keys each, small CNN only
        seeds = {"mni-tissue": 5, "mnist5k": 4, "textures": 2}
        return [(d, "smallcnn", s, seed) for d in DATASETS for seed in range(seeds[d])
                for s in ("tiles", "tiles,levels=random")]
    if name == "levels-demo":  # the same comparison with the demo's 8-epoch victim on the digits
        return [("mnist5k", "smallcnn8", s, seed) for seed in range(6) for s in ("tiles", "tiles,levels=random")]
    if name == "levels-r18":  # the same comparison against ResNet-18, three keys per dataset (sized for one GPU)
        return [(d, "resnet18", s, seed) for seed in range(3) for d in DATASETS
                for s in ("tiles", "tiles,levels=random")]
    if name == "gpu5":  # one GPU session: adv from the spread tiles over three keys, levels-r18, then 3 px tiles
        adv = [(d, "resnet18", adv_from_tiles(d), seed) for seed in range(3) for d in DATASETS]
        p3 = [(d, "resnet18", "tiles,period=3", seed) for seed in range(3) for d in ("mnist5k", "mni-tissue")]
        return adv + grid("levels-r18") + p3
    if name == "gpu6":  # adv from the tiles: two more keys, then a shorter and a longer surrogate training
        more = [(d, "resnet18", adv_from_tiles(d), seed) for seed in (3, 4) for d in DATASETS]
        return more + [(d, "resnet18", f"adv,init=tiles,epochs={e},min_steps=1", seed) for e in (3, 40)
                       for seed in range(3) for d in DATASETS[:2]]
    if name == "gpu7":  # ResNet-18 on tissue: the same keys against other victim seeds (key = 7 + seed)
        pairs = [("adv,init=tiles", 2, v) for v in (0, 1, 3, 4)] + [("adv,init=tiles", 0, v) for v in (1, 2)] \
            + [("adv,init=tiles", 4, v) for v in (0, 1)] + [("tiles", 0, v) for v in (1, 2)]
        return [("mni-tissue", "resnet18", spec, k, v) for spec, k, v in pairs]
    if name == "gpu8":  # ResNet-18 against the colour levels (the default tiles) and adv from them
        tiles = [(d, "resnet18", "tiles", seed) for seed in range(5) for d in ("mni-tissue", "textures")]
        return tiles + [(d, "resnet18", adv_from_tiles(d, "tiles-colour"), seed) for seed in range(5) for d in DATASETS]
    if name == "gpu9":
        # Does a key that protects against one victim seed protect against another? The default tiles over keys
        # 7-14, each against two ResNet-18 seeds (gpu8 holds the first seed of keys 7-11), two more converged
        # small-CNN seeds on the photographs, and the 8-epoch verify victim on every key (a cheap proxy?)
        r18 = [(d, "resnet18", "tiles", k, v) for d in ("mni-tissue", "textures") for k in range(8)
               for v in ((k + 1) % 5, k) if not (k < 5 and v == k)]
        small = [("textures", "smallcnn", "tiles", k, v) for k in range(8) for v in (1, 2)]
        proxy = [(d, "smallcnn8", "tiles", k, 0) for d in ("mni-tissue", "textures") for k in range(8)]
        return r18 + small + proxy
    if name == "gpu10":
        # Which class owns the darkest tile on tissue (classes background, CSF, GM, WM; counts of 16): the leaking
        # class (white matter) gets it, against gpu8/gpu9's first-seed rows of the same keys
        keys = [(k, k if k < 5 else (k + 1) % 5) for k in range(7)]
        return [("mni-tissue", "resnet18", f"tiles,levels=colour,counts={c}", k, v)
                for c in ("10-6-15-1", "6-15-10-1") for k, v in keys]
    if name == "gpu11":
        # adv from an ensemble of surrogates (ensemble=N: N small CNNs from different keyed starts, mean loss) against
        # ResNet-18 over five keys, with the surrogate recipes of gpu6's best single-surrogate rows (tissue and digits:
        # 40 epochs; photographs: 3), five surrogates on tissue, then the small CNN victim on the same protections
        a40, a3 = "adv,init=tiles,epochs=40,min_steps=1", "adv,init=tiles,epochs=3,min_steps=1"
        ens = {"mni-tissue": f"{a40},ensemble=3", "textures": f"{a3},ensemble=4",
               "mnist5k": f"{a40},ensemble=3,flip=false"}
        r18 = [(d, "resnet18", ens[d], k) for k in range(5) for d in DATASETS]
        five = [("mni-tissue", "resnet18", f"{a40},ensemble=5", k) for k in range(5)]
        small = [(d, "smallcnn", ens[d], k) for k in range(3) for d in DATASETS]
        # the single-surrogate rows of keys 3 and 4 (gpu6 ran keys 0-2), so five keys compare pairwise
        single = [(d, "resnet18", s, k) for k in (3, 4) for d, s in (("mni-tissue", a40), ("textures", a3))]
        return r18 + five + small + single
    if name == "victims":
        # Which architectures the default tiles defeat: VGG-16 (max pools after stride-1 convs, like the small CNN)
        # against DenseNet-121, MobileNetV2 and ResNet-50 (strided convs or average pools, no max pool at 32 px, like
        # ResNet-18), clean and tiles, key 7
        return [(d, v, s, 0) for v in ("vgg16", "mobilenetv2", "densenet121", "resnet50") for d in DATASETS
                for s in ("tiles", "clean")]
    if name == "rrc":  # CPU: the default tiles against a victim trained with random resized crops, two keys
        return [(d, "smallcnn-rrc", spec, seed) for d in DATASETS for spec in ("clean", "tiles") for seed in (0, 1)
                if not (spec == "clean" and seed == 1)]
    if name == "levels-colour":  # CPU: the tile levels in the key's order against levels given out by colour
        pairs = [("mni-tissue", k, v) for k, v in ((7, 0), (8, 0), (9, 0), (10, 0), (16, 0), (8, 1), (9, 3))] \
            + [("textures", k, 0) for k in range(7, 15)] + [("mnist5k", k, k - 7) for k in range(7, 11)]
        return [(d, "smallcnn", f"tiles,levels={lv}", k - 7, v) for d, k, v in pairs for lv in ("colour", "spread")] \
            + [("mnist5k", "smallcnn8", "tiles,levels=colour", k - 7, k - 7) for k in range(7, 11)]
    if name == "colour-removed":  # CPU: the photographs with and without their colour cues, both victims
        specs, sets = ("clean", "tiles", "ar", "lsp", "random", "adv", "em"), ("textures", "textures-norm",
                                                                                 "textures-grey")
        small = [(d, "smallcnn", s, 0) for d in sets for s in specs]
        keys = [(d, "smallcnn", "tiles", k) for d in sets for k in (1, 2)]
        narrow = [(d, "resnet18-narrow", s, k) for d in sets
                  for s, k in (("clean", 0), ("tiles", 0), ("tiles", 1), ("tiles", 2))]
        tissue = [(d, v, s, k) for d in ("mni-tissue-norm", "mni-tissue") for v in ("smallcnn", "resnet18-narrow")
                  for s, k in (("clean", 0), ("tiles", 0), ("tiles", 1))]
        return small + keys + narrow + [("textures-norm", "resnet18-narrow", s, 0)
                                        for s in ("adv,init=tiles,epochs=3,min_steps=1", "ar")] + tissue
    if name == "pil":  # CPU: PIL on every dataset against both CPU victims (key 7), the digits over three keys, the
        # references the CPU rows lacked, then the datasets without their colour cues
        first = [(d, v, "pil", 0) for v in ("smallcnn", "resnet18-narrow") for d in DATASETS]
        digits = [("mnist5k", "resnet18-narrow", s, k) for k in (1, 2) for s in ("pil", "tiles")]
        refs = [("mnist5k", "resnet18-narrow", "clean", 0), ("mnist5k", "smallcnn", "clean", 0),
                ("mnist5k", "smallcnn", "tiles", 0)]
        colourless = [(d, "resnet18-narrow", "pil", 0) for d in VARIANTS] + [("textures-norm", "smallcnn", "pil", 0)]
        return first + digits + refs + colourless
    if name == "jpeg":  # CPU: the victim saves the protected digits as JPEG (quality 10 and 75) before training
        specs = [f"{s}+jpeg:{q}" for q in (10, 75) for s in ("clean", "pil", "tiles")]
        return [("mnist5k", v, s, 0) for v in ("smallcnn", "resnet18-narrow") for s in specs]
    if name == "oppose":
        # CPU: the tile levels signed so that they narrow the classes' colour gaps (levels=oppose) against the key's
        # sign (colour), on the keys where the two differ, with both CPU victims; the narrow ResNet on tissue over
        # keys 7-12 with two more hand-set orders; then ResNet-18 itself on the two tissue keys that change
        c, o = "tiles,levels=colour", "tiles,levels=oppose"
        narrow = [("mni-tissue", "resnet18-narrow", s, k) for k in range(6)
                  for s in (c, o, f"{c},counts=10-6-15-1", f"{c},counts=15-10-6-1")]
        small = [("textures", "smallcnn", s, k) for k in (1, 2, 6, 7) for s in (o, c)] \
            + [("mni-tissue", "smallcnn", o, k) for k in (0, 1, 3)]
        return narrow + small + [("textures", "resnet18-narrow", s, k) for k in (1, 2) for s in (o, c)] \
            + [("mni-tissue", "resnet18", o, k) for k in (0, 1)]
    if name == "oppose-r18":
        # one GPU session: levels=oppose against ResNet-18 on tissue and the photographs, keys 7-14 with gpu9's two
        # victim seeds per key (gpu8/gpu9 hold levels=colour on the same jobs; the digits' keys do not change)
        return [(d, "resnet18", "tiles,levels=oppose", k, v) for d in ("mni-tissue", "textures") for k in range(8)
                for v in ((k + 1) % 5, k)]
    if name == "walsh":
        # CPU: zero-mean square-wave tiles (bench-only codes=walsh), and the same waves with small offsets in
        # levels=oppose's order (counts 7-11-5-9), against levels=oppose on tissue: the narrow ResNet over keys 7-14
        # (and second victim seeds), the small CNN over keys 7-12, four ResNet-18 runs of the waves (gpu9's key/seed
        # pairs 11/4 and 12/5, where oppose failed, and 9/2 and 10/4, where it held) and two of the offset waves (12/5,
        # 10/4); then a longer tile period (8 px)
        w, m, o = "tiles,codes=walsh", "tiles,codes=walsh,counts=7-11-5-9", "tiles,levels=oppose"
        narrow = [("mni-tissue", "resnet18-narrow", s, k, k) for s in (w, m) for k in range(8)] \
            + [("mni-tissue", "resnet18-narrow", w, k, k + 1) for k in range(3)] \
            + [("mni-tissue", "resnet18-narrow", o, k, v) for k, v in ((6, 6), (7, 7), (0, 1), (1, 2))]
        return narrow + [("mni-tissue", "smallcnn", s, k, k) for s in (w, m) for k in range(6)] \
            + [("mni-tissue", "resnet18", w, k, v) for k, v in ((4, 4), (5, 5), (2, 2), (3, 4))] \
            + [("mni-tissue", "resnet18", m, k, v) for k, v in ((5, 5), (3, 4))] \
            + [("mni-tissue", "resnet18-narrow", "tiles,period=8", k, k) for k in range(4)]
    if name == "walsh-r18":  # one GPU session: both wave codes against ResNet-18 on tissue, gpu9's 16 key/seed pairs
        return [("mni-tissue", "resnet18", s, k, v) for s in ("tiles,codes=walsh", "tiles,codes=walsh,counts=7-11-5-9")
                for k in range(8) for v in ((k + 1) % 5, k)]
    if name == "gpu12":
        # one GPU session: the real ResNet-18 (ImageNet stem above 64 px) at 96 px, where bench/resize.py measured
        # the narrow stand-in: the photographs standardised and in colour with 2-px against 4-px tiles (keys 7 and 8,
        # victim seed 0), tissue with its 4-px tiles; then the default tiles (levels=oppose) against ResNet-18 on
        # tissue over gpu9's 16 key/seed pairs (all on one device, where the 36.9% combined CPU and GPU runs), 16
        # new keys (15-30), the photographs' 16 pairs; then, if time is left, keys 9 and 10 on the standardised
        # photographs at 96 px and 16 more new tissue keys (31-46)
        pairs = (("clean", 0), ("tiles,period=2", 0), ("tiles,period=2", 1), ("tiles,period=4", 0),
                 ("tiles,period=4", 1))
        big = [(f"{d}@96", "resnet18", s, k, 0) for d in ("textures-norm", "textures") for s, k in pairs] \
            + [("mni-tissue@96", "resnet18", s, k, 0) for s, k in (("clean", 0), ("tiles", 0), ("tiles", 1))]
        old = grid("oppose-r18")
        new = [("mni-tissue", "resnet18", "tiles,levels=oppose", k, k % 5) for k in range(8, 40)]
        more = [("textures-norm@96", "resnet18", f"tiles,period={p}", k, 0) for k in (2, 3) for p in (2, 4)]
        return big + [j for j in old if j[0] == "mni-tissue"] + new[:16] + [j for j in old if j[0] == "textures"] \
            + more + new[16:]
    if name == "gpu13":
        # the rest of one GPU session: keys 9 and 10 on the standardised photographs at 96 px (2-px against 4-px
        # tiles), then gpu10's lead (WM on the darkest tile, GM on the brightest) on 28 of gpu12's tissue key/seed
        # pairs (gpu9's 16 and keys 15-26), against levels=oppose measured there
        more = [j for j in grid("gpu12") if j[0] == "textures-norm@96" and j[3] >= 2]
        pairs = [(k, v) for d, _, _, k, v in grid("gpu12") if d == "mni-tissue"][:28]
        return more + [("mni-tissue", "resnet18", "tiles,levels=colour,counts=10-6-15-1", k, v) for k, v in pairs]
    if name == "held-out":
        # CPU: the defaults, untouched, on photographs that no default was chosen on: the small CNN and ResNet-18's
        # narrow stand-in, clean, the recommended tiles over three keys, and the other model-free and fast methods
        small = [*CLEAN_TILES3, ("random", 0), ("pil", 0), ("ar", 0)]
        narrow = [*CLEAN_TILES3, ("pil", 0), ("pil", 1), ("random", 0)]
        late = [("grey-photos", v, "adv", 0) for v in ("smallcnn", "resnet18-narrow")]
        return [("grey-photos", "smallcnn", s, k) for s, k in small] \
            + [("grey-photos", "resnet18-narrow", s, k) for s, k in narrow] + late
    if name == "held-out-r18":  # a GPU session: ResNet-18 itself on the held-out photographs, the same jobs
        return [("grey-photos", "resnet18", s, k) for s, k in (*CLEAN_TILES3, ("adv", 0), ("pil", 0), ("random", 0))]
    if name == "textures-lum":  # CPU: the benchmark's photographs in grey, the grey default period (4) and 3
        return [("textures-lum", "smallcnn", s, k) for s, k in (*CLEAN_TILES3, ("tiles,period=3", 0),
                                                                  ("tiles,period=3", 1), ("tiles,period=3", 2))]
    if name == "held-out-norm":  # CPU: the same crops each standardised (mean and spread no longer name them)
        return [("grey-photos-norm", "smallcnn", s, k) for s, k in CLEAN_TILES3]
    if name == "pil-r18":  # one GPU session: PIL against ResNet-18 over five keys, the default tiles beside it
        return [(d, "resnet18", s, k) for k in range(5) for d in DATASETS for s in ("pil", "tiles")]
    if name == "textures-tiled":  # CPU: EM and adv started from the colour-level tiles on the photographs, key 7
        specs = ("em,init=tiles-colour,augment=4,min_rounds=5", "adv,init=tiles-colour")
        return [("textures", "smallcnn", spec, 0) for spec in specs]
    raise SystemExit(f"--grid {name}: unknown ({', '.join(GRIDS)})")


def split_defences(spec: str) -> tuple[str, list[str]]:
    """``"pil+jpeg:10"`` -> ``("pil", ["jpeg:10"])``: the protection, then the dataset defences the victim applies
    to the protected training images."""
    spec, *defences = spec.split("+")
    return spec, defences


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"em,init=tiles,augment=4"`` -> ``("em", {"init": "tiles", "augment": "4"})`` (values stay strings, as
    ``--param`` gives them; the method's Params coerce and validate them)."""
    method, *kv = spec.split(",")
    return method, dict(x.split("=", 1) for x in kv)


def sized(name: str) -> tuple[str, int | None]:
    """``"textures-norm@96"`` -> ``("textures-norm", 96)``: a dataset of DATASETS or VARIANTS built at another pixel
    size, as ``bench/resize.py`` builds it (cut at most at its ``BUILT_MAX`` size, then enlarged); a plain name ->
    ``(name, None)``."""
    base, at, size = name.partition("@")
    if base not in DATASETS and base not in VARIANTS or (at and not size.isdigit()):
        raise SystemExit(f"dataset {name}: unknown ({', '.join(DATASETS + tuple(VARIANTS))}, optionally @SIZE)")
    return base, int(size) if at else None


def _build(name: str):
    """Dataset ``name`` (see :func:`sized`) built from its source packages: ``(train ImageSet, test images, test
    labels)`` with the training ids ``export`` gives."""
    from unlearnable.data import ImageSet, load
    base, size = sized(name)
    source = VARIANTS.get(base, base)
    if size is None:
        ds = load(source)
    else:
        from resize import _data  # noqa: PLC0415  (bench/resize.py imports this module)
        ds = _data(source, 2000, 500, size)
    tr, te = ds.split("train"), ds.split("test")
    ids = tuple(f"{i:06d}" for i in range(len(tr)))
    return ImageSet(tr.images, tr.labels, ids, ("train",) * len(tr), tuple(ds.classes)), te.images, te.labels


def _file(data_dir: str | Path, name: str) -> Path:
    """Where ``export`` writes dataset ``name``: ``<name>.pt``, a size after ``_`` (``mni-tissue_96.pt``)."""
    return Path(data_dir) / f"{name.replace('@', '_')}.pt"


def export(out: Path, names: list[str] | None = None) -> None:
    """Write ``names`` (default: DATASETS and VARIANTS at their benchmark size) to ``out``, for a machine without
    the datasets' source packages."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names or list(DATASETS) + list(VARIANTS):
        tr, te_im, te_lab = _build(name)
        torch.save({"tr": (tr.images, tr.labels, tr.classes), "te": (te_im, te_lab)}, _file(out, name))
        print(f"{_file(out, name)}: {len(tr)} train, {len(te_lab)} test", file=sys.stderr)


def _load(data_dir: str, name: str):
    """Dataset ``name`` as ``export`` wrote it to ``data_dir``; a sized name (``textures@96``) without a file is
    built here from its source packages (the photographs ship inside scikit-learn and scikit-image)."""
    from unlearnable.data import ImageSet
    path = _file(data_dir, name)
    if not path.exists() and sized(name)[1] is not None:
        return _build(name)
    d = torch.load(path)
    im, lab, cls = d["tr"]
    tr = ImageSet(im, lab, tuple(f"{i:06d}" for i in range(len(lab))), ("train",) * len(lab), tuple(cls))
    return tr, *d["te"]


def seeded_subset(tr, n: int):
    """The first ``n`` rows of a seed-0 permutation of ``tr`` (all of it when ``n >= len(tr)``): the 1,000-image CPU
    benchmarks' training set."""
    if n >= len(tr):
        return tr
    return tr.subset(torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[:n])


def train_small(images: torch.Tensor, labels: torch.Tensor, k: int, name: str, te_im: torch.Tensor,
                te_lab: torch.Tensor, epochs: int, defence: str = "none") -> float:
    """Final-epoch clean-test accuracy of the CPU benchmarks' victim: a small CNN (seed 0, batch 64, lr 0.05) with
    dataset ``name``'s crop/flip augmentation, then ``defence`` (e.g. ``at:linf:4/255``) unless ``"none"``."""
    from unlearnable.train.defenses import parse_defense
    from unlearnable.train.loop import Recipe, train_classifier
    hooks = [parse_defense(AUG.get(name, "aug:4")).hook(k)]
    if defence != "none":
        hooks.append(parse_defense(defence).hook(k))
    recipe = Recipe(model="smallcnn", seed=0, epochs=epochs, batch_size=64, lr=0.05)
    _, h = train_classifier(images, labels, k, recipe, device="cpu", eval_sets={"test": (te_im, te_lab)}, hooks=hooks)
    return round(h.epochs[-1]["test_acc"], 4)


WALSH = ((0, 2), (2, 0), (2, 2), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1))  # (rows, columns) frequencies, in order


def walsh_tiles(num_classes: int, channels: int = 1, period: int = 4, counts: list[int] | None = None
                ) -> torch.Tensor:
    """Bench-only ``codes=walsh`` on grey ``tiles``: ``(K, 1, p, p)`` zero-mean square waves, class ``k`` the
    ``k``-th frequency pair of :data:`WALSH` (cycles per tile down the rows and along the columns: 2 is the Nyquist
    stripe, 1 two pixels on, two off). Any two are orthogonal under every cyclic shift and mirror, and every tile has
    as many ``+`` as ``-`` signs: a pattern with no brightness offset, against the product's tiles, whose counts of
    ``+`` signs give each class a brightness offset. ``counts`` (``codes=walsh,counts=7-11-5-9``) then gives class
    ``k`` exactly ``counts[k]`` ``+`` signs, flipping the first wrong-signed pixels in raster order: the same
    patterns with a small offset each."""
    if channels != 1 or period != 4 or num_classes > len(WALSH):
        raise SystemExit(f"codes=walsh: grey images with a 4 px tile and at most {len(WALSH)} classes")
    if counts is not None and (len(counts) != num_classes or not all(0 < c < period * period for c in counts)):
        raise SystemExit(f"codes=walsh,counts={counts}: one count in 1..{period * period - 1} per class")

    def wave(f: int) -> torch.Tensor:
        return 1 - 2 * ((2 * f * torch.arange(period)) // period % 2).float() if f else torch.ones(period)

    tiles = torch.stack([torch.outer(wave(fy), wave(fx)) for fy, fx in WALSH[:num_classes]])
    for t, c in zip(tiles.view(num_classes, -1), counts or []):
        have = int((t > 0).sum())
        flip = ((t < 0) if c > have else (t > 0)).nonzero()[:abs(c - have), 0]
        t[flip] = -t[flip]
    return tiles[:, None]


@contextlib.contextmanager
def _swapped(name: str, value):
    """``unlearnable.protect.tiles.<name>`` replaced by ``value`` for one job, the product's restored after it."""
    from unlearnable.protect import tiles as T
    saved = getattr(T, name)
    setattr(T, name, value)
    try:
        yield
    finally:
        setattr(T, name, saved)


def _tile_codes(codes: str | None, counts: str | None = None):
    """Bench-only ``codes=walsh`` on ``tiles``: every class's tile set to :func:`walsh_tiles` in class order in
    place of the product's draw (the key still draws each image's phase), with ``counts`` if given."""
    if codes is None:
        return contextlib.nullcontext()
    if codes != "walsh":
        raise SystemExit(f"codes={codes}: only walsh")
    fixed = None if counts is None else [int(c) for c in counts.split("-")]
    return _swapped("draw_tiles", lambda num_classes, channels, period, g, **kw:
                    walsh_tiles(num_classes, channels, period, fixed))


def _tile_counts(counts: str | None):
    """Bench-only ``counts=a-b-c-...`` on ``tiles,levels=colour``: every class's count of ``+`` signs (grey data:
    one per class, in class order) set by hand in place of the colour assignment, to test which class should own
    which level (with ``levels=oppose`` the counts could still be mirrored)."""
    if counts is None:
        return contextlib.nullcontext()
    fixed = torch.tensor([int(c) for c in counts.split("-")])[:, None]
    return _swapped("levels_by_colour", lambda drawn, means: fixed)


def _tile_overrides(counts: str | None, codes: str | None):
    """The bench-only tile options of one spec: with ``codes``, ``counts`` sets the waves' counts; alone, the
    colour levels'."""
    return _tile_codes(codes, counts) if codes is not None else _tile_counts(counts)


def victim_recipe(victim: str, seed: int, epochs: int | None = None):
    """``(Recipe, augmentation spec or None)`` of ``VICTIMS[victim]`` with victim seed ``seed`` (``epochs`` overrides
    its epochs: a quicker look)."""
    from unlearnable.train.loop import Recipe
    kw = dict(VICTIMS[victim])
    aug, model = kw.pop("aug", None), kw.pop("model", victim)
    if epochs:
        kw["epochs"] = epochs
    return Recipe(model=model, seed=seed, **kw), aug


def protect_and_train(name: str, spec: str, tr, te_im: torch.Tensor, te_lab: torch.Tensor, recipe,
                      key_seed: int, device: str = "cpu", aug: str | None = None, probes=None):
    """Fit ``spec`` (``"clean"``: nothing) on ``tr`` with key ``key_seed``, apply the dataset defences named after
    a ``+`` (``"pil+jpeg:10"``: the victim saves the protected images as JPEG first), then train ``recipe``'s victim
    from scratch on the result with the benchmark's augmentation for dataset ``name``, scored on the clean test split
    after every epoch; ``probes(method, perturbation)``, if given, returns the evaluation sets to score instead
    (``bench/shortcut.py``).

    Returns (training images as trained on, the fitted perturbation or None, the victim's history, fit seconds).
    """
    from unlearnable.protect import METHODS, Key
    from unlearnable.train.defenses import parse_defense
    from unlearnable.train.loop import train_classifier
    t = time.time()
    algo = pert = None
    spec, defences = split_defences(spec)
    if spec == "clean":
        imgs = tr.images
    else:
        method, params = parse_spec(spec)
        counts, codes = params.pop("counts", None), params.pop("codes", None)
        algo = METHODS.get(method)(**params)
        algo.device = device
        with _tile_overrides(counts, codes):
            pert = algo.fit(tr, Key.from_seed(key_seed))
        imgs = algo.apply(tr, pert)
    for d in defences:
        imgs = parse_defense(d).transform(imgs)
    fit_s = time.time() - t
    hook = parse_defense(aug or AUG.get(name, "aug:4")).hook(tr.num_classes)
    eval_sets = probes(algo, pert) if probes is not None else {"test": (te_im, te_lab)}
    _, h = train_classifier(imgs, tr.labels, tr.num_classes, recipe, device=device, eval_sets=eval_sets,
                            hooks=[hook])
    return imgs, pert, h, fit_s


def run_job(job: tuple, data_dir: str, device: str, cache: dict) -> dict[str, Any]:
    """One job ``(data, victim, spec, seed)``: protection key ``7 + seed`` and victim seed ``seed``; a fifth
    element sets the victim's seed apart from the key (does a key that protects against one victim seed protect
    against others?)."""
    from unlearnable.audit.validity import chance_level
    from unlearnable.data.quality import psnr
    name, victim, spec, seed = job[:4]
    vseed = job[4] if len(job) > 4 else seed
    if name not in cache:
        cache[name] = _load(data_dir, name)
    tr, te_im, te_lab = cache[name]
    t = time.time()
    recipe, aug = victim_recipe(victim, vseed)
    imgs, _, h, fit_s = protect_and_train(name, spec, tr, te_im, te_lab, recipe, 7 + seed, device, aug)
    chance = chance_level(te_lab, int(te_lab.max()) + 1)  # the product's rule: the commonest test class
    return {"data": name, "victim": victim, "spec": spec, "seed": seed, "vseed": vseed, "chance": round(chance, 4),
            "test": round(h.epochs[-1]["test_acc"], 4), "best_test": round(max(e["test_acc"] for e in h.epochs), 4),
            "train": round(h.epochs[-1]["train_acc"], 4), "curve": [round(e["test_acc"], 3) for e in h.epochs][::5],
            "psnr": None if spec == "clean" else float(psnr(tr.images, imgs).clamp(max=99).mean()),
            "fit_s": round(fit_s, 1), "train_s": round(time.time() - t - fit_s, 1),
            "confusion": h.eval_confusion.get("test")}


def _worker(q, out_path: str, deadline: float, wid: int, data_dir: str, device: str, threads: int = 2) -> None:
    torch.set_num_threads(threads)
    cache: dict = {}
    while time.time() < deadline:
        try:
            job = q.get_nowait()
        except Exception:  # queue empty
            return
        try:
            row = run_job(job, data_dir, device, cache)
        except Exception as e:  # one failed job must not stop the sweep; its line says why
            row = {"job": list(job), "error": repr(e), "traceback": traceback.format_exc()[-800:]}
        row["worker"] = wid
        with open(out_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row)[:300], flush=True)


def run(a: argparse.Namespace) -> None:
    import torch.multiprocessing as mp
    jobs = grid(a.grid)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    for j in jobs:
        q.put(j)
    deadline = time.time() + a.budget_s
    procs = [ctx.Process(target=_worker, args=(q, a.out, deadline, i, a.data, a.device, a.threads))
             for i in range(a.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.time() + 60))
    for p in procs:
        if p.is_alive():
            p.terminate()
    print(json.dumps({"grid": a.grid, "jobs": len(jobs), "workers": a.workers, "device": a.device,
                      "device_name": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
                      "wall_s": round(time.time() - deadline + a.budget_s, 1)}))


def table(path: str) -> str:
    rows = [json.loads(x) for x in open(path) if x.strip()]
    rows = sorted((r for r in rows if "error" not in r), key=lambda r: (r["data"], r["victim"], r["spec"] != "clean"))
    lines = ["| dataset | victim | protection | key / victim seed | clean-test % (final) | best epoch % | train % "
             "| PSNR dB | fit s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ps = "—" if r["psnr"] is None else f"{r['psnr']:.1f}"
        fit = "—" if r.get("fit_s") is None else f"{r['fit_s']:.0f}"  # rows from before the fit was timed
        seeds = f"{7 + r['seed']} / {r.get('vseed', r['seed'])}" if "seed" in r else "—"
        lines.append(f"| {r['data']} | {r['victim']} | `{r['spec']}` | {seeds} | {100 * r['test']:.1f} | "
                     f"{100 * r['best_test']:.1f} | {100 * r['train']:.1f} | {ps} | {fit} |")
    return "\n".join(lines) + "\n"


def figure(paths: list[str], out: str) -> None:
    """Every run as a dot: one panel per (dataset, victim), one row per protection, each run's final clean-test
    accuracy with the row's mean as a bar, and chance and the goal (chance + 10 points) as lines; rows read from
    the JSON lines of one or more sweeps (a job that failed is skipped). How far single runs spread is the point:
    a mean over keys says whether a method protects, a single run does not."""
    from unlearnable.report import pyplot

    rows = [r for path in paths for r in map(json.loads, filter(str.strip, open(path))) if "error" not in r]
    if not rows:
        raise SystemExit(f"figure: no finished runs in {', '.join(paths)}")
    panels = list(dict.fromkeys((r["data"], r["victim"]) for r in rows))
    plt = pyplot()
    specs = {pn: list(dict.fromkeys(r["spec"] for r in rows if (r["data"], r["victim"]) == pn)) for pn in panels}
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 0.9 + 0.42 * sum(map(len, specs.values())) +
                                                      0.6 * len(panels)), squeeze=False,
                             gridspec_kw={"height_ratios": [len(specs[pn]) + 1 for pn in panels]})
    for ax, pn in zip(axes[:, 0], panels):
        mine = [r for r in rows if (r["data"], r["victim"]) == pn]
        chance = 100 * mine[0]["chance"]
        for y, spec in enumerate(specs[pn]):
            acc = [100 * r["test"] for r in mine if r["spec"] == spec]
            jitter = torch.linspace(-0.15, 0.15, len(acc)).tolist() if len(acc) > 1 else [0.0]
            ax.scatter(acc, [y + j for j in jitter], s=16, alpha=0.7)
            mean = sum(acc) / len(acc)
            ax.plot([mean, mean], [y - 0.3, y + 0.3], color="black", lw=2)
            ax.annotate(f"{mean:.1f}% ({len(acc)})", (mean, y + 0.32), fontsize=7, ha="center")
        ax.axvline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.axvline(chance + 10, color="green", ls=":", lw=1, label="chance + 10 (goal)")
        ax.set_yticks(range(len(specs[pn])))
        ax.set_yticklabels([sp if len(sp) < 40 else sp[:38] + "…" for sp in specs[pn]], fontsize=7)
        ax.set_ylim(-0.7, len(specs[pn]) - 0.3)
        ax.set_xlim(0, 100)
        ax.invert_yaxis()
        ax.set_title(f"{pn[0]}, {pn[1]}: final clean-test accuracy per run (%), bar = mean (runs)", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def cue(data_dir: str, names: tuple[str, ...] = DATASETS) -> list[dict[str, Any]]:
    """How far each dataset's classes can be told apart from colour statistics alone, with the product's colour
    classifier (``unlearnable.audit.cues``: each channel's mean and standard deviation and a coarse joint colour
    histogram, no position or shape; the classifier ``unlearnable cues`` and ``--verify`` report), fitted on the
    training split and scored on the clean test split; then fitted on training images whose class's mean is moved
    by ``eps`` per channel *away* from the nearest other class's mean (so that clean test images sit towards it).
    A victim that learns this cue besides a shortcut keeps about this accuracy on clean images, and a class-wise
    shift of 8/255 barely moves it."""
    from unlearnable.audit.cues import colour_features, fit_softmax

    def score(train: torch.Tensor, y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor, k: int) -> float:
        predict = fit_softmax(colour_features(train), y, k)
        return round(float((predict(colour_features(test)) == test_y).double().mean()), 4)

    rows = []
    for name in names:
        tr, te_im, te_lab = _load(data_dir, name)
        y, k = tr.labels, tr.num_classes
        means = torch.stack([tr.images[y == c].float().mean((0, 2, 3)) for c in range(k)])
        nearest = (torch.cdist(means, means) + 9 * 255 * torch.eye(k)).argmin(1)
        row: dict[str, Any] = {"data": name, "clean": score(tr.images, y, te_im, te_lab, k)}
        for e in (8, 16):
            away = torch.sign(means - means[nearest])[y][:, :, None, None] * e
            moved = (tr.images.float() + away).clamp(0, 255).to(torch.uint8)
            row[f"shift_{e}"] = score(moved, y, te_im, te_lab, k)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("dir", type=Path)
    e.add_argument("names", nargs="*", help="datasets to write (default: DATASETS and VARIANTS); NAME@SIZE builds "
                   "NAME at SIZE px, e.g. mni-tissue@96")
    r = sub.add_parser("run")
    r.add_argument("--data", required=True)
    r.add_argument("--grid", default="gpu1")
    r.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    r.add_argument("--budget-s", type=float, default=330.0)
    r.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    r.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    r.add_argument("--out", required=True)
    sub.add_parser("table").add_argument("rows")
    c = sub.add_parser("cue", help="accuracy from per-image colour/brightness statistics alone")
    c.add_argument("data")
    c.add_argument("names", nargs="*", help="exported datasets to score (default: DATASETS)")
    f = sub.add_parser("figure", help="every run as a dot, per dataset and victim")
    f.add_argument("rows", nargs="+")
    f.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "export":
        export(a.dir, a.names)
    elif a.cmd == "run":
        run(a)
    elif a.cmd == "cue":
        cue(a.data, tuple(a.names) or DATASETS)
    elif a.cmd == "figure":
        figure(a.rows, a.out)
    else:
        print(table(a.rows), end="")


if __name__ == "__main__":
    main()
