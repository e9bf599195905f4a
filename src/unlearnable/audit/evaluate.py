"""``unlearnable evaluate``: the victim audit.

The same recipe is trained on the protected and on the clean training split, and both victims are tested on the
clean test split. Protection works when ``protected_acc`` falls far below ``clean_acc`` (towards chance).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..data import ImageSet
from ..errors import UserError
from ..log import log, name_list, warn
from ..runtime import distributed as D
from ..runtime.schedule import scaling_note
from ..train.defenses import Defense
from ..train.loop import BatchHook, History, Recipe, confusion, train_classifier
from .classes import balanced_accuracy
from .validity import baseline_valid, chance_level, chance_note

# Victim defaults by device: the papers' ResNet-18 needs a GPU (10 epochs of both victims take about
# 50 min on two CPU cores); on a CPU the small CNN gives a usable audit in minutes. Measurements: README.md.
VICTIM_DEFAULTS = {"cpu": ("smallcnn", 8), "gpu": ("resnet18", 10)}
VICTIM_HELP = ("victim architecture; default by device: smallcnn, 8 epochs on CPU (a few minutes for mnist5k on 2 "
               "cores); resnet18, 10 epochs on a GPU (the papers' victim; about 50 min on 2 CPU cores)")


def default_victim(device: str, model: str | None, epochs: int | None) -> tuple[str, int, str]:
    """Fill an unset ``--model`` / ``--epochs`` from :data:`VICTIM_DEFAULTS`; returns (model, epochs, note).

    ``note`` is the start-up line saying what was chosen and why (empty when both were given).
    """
    kind = "gpu" if str(device).startswith("cuda") else "cpu"
    m, e = VICTIM_DEFAULTS[kind]
    note = ""
    if model is None or epochs is None:
        why = f"default for {kind.upper()}" if model is None else "as set"
        note = f"victim: {model or m}, {epochs or e} epochs ({why}; set --model/--epochs to change)"
    return model or m, epochs or e, note


HELD_OUT = ("test", "val")  # the split victims are tested on: the first of these the clean data has


def held_out_split(ds: ImageSet, flag: str) -> str:
    """The clean split that victims are tested on: ``test``, or ``val`` when the data has no test split (an image
    folder of ``train/`` and ``val/``, as ImageNet-style sets are shipped). ``flag`` names the data in the error."""
    names = ds.split_names()
    for name in HELD_OUT:
        if name in names:
            return name
    raise UserError(f"{flag}: no 'test' or 'val' split to test victims on (present: {', '.join(names)})")


def warn_unscored(ds: ImageSet, split: str, prefix: str = "", what: str = "the results say") -> list[str]:
    """Warn about (and return) the classes with training images but none in the held-out ``split``: a rare class
    that a class-folder split put wholly in train (a class of 3 images does so one time in two at the default 20%
    test share) is never scored: ``what`` (a subject and its verb, e.g. "the verdict says") says nothing about it."""
    held = torch.bincount(ds.labels[ds.indices(split)], minlength=ds.num_classes)
    trained = torch.bincount(ds.labels[ds.indices("train")], minlength=ds.num_classes)
    missing = [ds.classes[k] for k in range(ds.num_classes) if held[k] == 0 and trained[k] > 0]
    if missing:
        warn(f"{prefix}{len(missing)} class(es) have training images but none in the clean '{split}' split, so "
             f"{what} nothing about them: {name_list(missing)} (give them "
             f"test images, e.g. a train/test folder layout or a larger --test-fraction)")
    return missing


def check_pair(protected: ImageSet, clean: ImageSet, train_split: str, test_split: str) -> None:
    """The protected and clean data must describe the same samples (ids, labels, classes, shape)."""
    for name, ds in (("--protected", protected), ("--clean", clean)):
        if train_split not in ds.split_names():
            raise UserError(f"{name}: no '{train_split}' split (present: {', '.join(ds.split_names())})")
    if test_split not in clean.split_names():
        raise UserError(f"--clean: no '{test_split}' split to test on (present: {', '.join(clean.split_names())})")
    p, c = protected.split(train_split), clean.split(train_split)
    if p.ids != c.ids or not torch.equal(p.labels, c.labels):
        raise UserError(f"--protected and --clean: the '{train_split}' splits hold different samples or labels "
                        f"({len(p)} vs {len(c)} images); point --clean at the source that was protected")
    if p.images.shape[1:] != c.images.shape[1:]:
        raise UserError(f"--protected images are {tuple(p.images.shape[1:])}, --clean images are "
                        f"{tuple(c.images.shape[1:])}")


def train_and_test(train: ImageSet, test: ImageSet, recipe: Recipe, device: str, hooks: Sequence[BatchHook] = (),
                   checkpoint: Path | None = None, progress: bool = False, desc: str = "victim",
                   defenses: Sequence[Defense] = (), clean_train: ImageSet | None = None) -> tuple[float, History]:
    """Train one victim on ``train`` (through ``defenses``) and return its clean test accuracy and history (with
    the final model's confusion matrix on ``test``, ``hist.test_confusion``).

    Dataset-level defences transform the training images only; batch hooks run after ``hooks``; a fine-tuning
    defence pre-trains on ``clean_train`` (default: ``train``).
    """
    images, model = train.images, None
    hooks = list(hooks)
    for d in defenses:
        images = d.transform(images)
        hook = d.hook(train.num_classes)
        hooks += [hook] if hook is not None else []
        base = clean_train if clean_train is not None else train
        model = d.start_model(base.images, base.labels, train.num_classes, recipe, device) or model
        recipe = d.recipe(recipe)
    model, hist = train_classifier(images, train.labels, train.num_classes, recipe, device,
                                   eval_sets={"test": (test.images, test.labels)}, hooks=hooks,
                                   checkpoint=checkpoint, progress=progress, desc=desc, model=model)
    hist.test_confusion = hist.eval_confusion.get("test")
    if hist.test_confusion is None:  # resumed from a checkpoint of a finished run: no epoch was evaluated here
        hist.test_confusion = confusion(model, test.images, test.labels, test.num_classes, device,
                                        precision=recipe.precision).tolist()
    return hist.epochs[-1]["test_acc"], hist


def best_epoch(epochs: Sequence[dict[str, Any]]) -> tuple[float | None, int | None]:
    """(highest clean-test accuracy, its 1-based epoch) over a victim's per-epoch history; (None, None) when no epoch
    was scored. The verdicts use the final epoch, as the unlearnable-examples literature does; a trainer who keeps
    the epoch that scores best on clean held-out data keeps this one instead, and a victim whose final epoch is at
    chance can have passed through epochs that read the content well (docs/methods.md, "The best epoch")."""
    scored = [(float(e["test_acc"]), i + 1) for i, e in enumerate(epochs) if e.get("test_acc") is not None]
    if not scored:
        return None, None
    acc, epoch = max(scored, key=lambda t: (t[0], -t[1]))
    return acc, epoch


def mix_indices(n: int, ratio: float, seed: int) -> torch.Tensor:
    """The ``round(ratio * n)`` training rows (sorted) that are protected when only a fraction is; seeded."""
    if not 0.0 <= ratio <= 1.0:
        raise UserError(f"--mix {ratio}: must be in [0, 1]")
    k = int(round(ratio * n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:k].sort().values


def mix_protected(protected: ImageSet, clean: ImageSet, ratio: float, seed: int) -> tuple[ImageSet, torch.Tensor]:
    """Training data where only a seeded fraction ``ratio`` of the rows come from ``protected``, the rest clean.

    Both sets must hold the same samples in the same order (see :func:`check_pair`). Returns (data, rows).
    """
    if ratio >= 1.0:
        return protected, torch.arange(len(protected))
    idx = mix_indices(len(clean), ratio, seed)
    return clean.with_images(protected.images[idx], idx), idx


def clean_rows(n: int, ratio: float, seed: int) -> torch.Tensor:
    """The training rows (sorted) that ``--mix ratio`` leaves clean: the complement of :func:`mix_indices`."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[mix_indices(n, ratio, seed)] = False
    return keep.nonzero().flatten()


def clean_rows_floor(clean_train: ImageSet, test: ImageSet, recipe: Recipe, ratio: float, seed: int,
                     device: str = "cpu", checkpoint: Path | None = None, progress: bool = False,
                     defenses: Sequence[Defense] = ()) -> tuple[float, Any, int, int]:
    """The floor of a partial release: a victim trained on only the rows that ``--mix ratio`` leaves clean, for as
    many SGD steps as a victim on every row (more epochs over fewer rows). An unlearnable example teaches nothing,
    so no such method takes a victim below this at that mix. Returns (accuracy, history, rows, epochs)."""
    keep = clean_rows(len(clean_train), ratio, seed)
    r = replace(recipe, epochs=max(1, round(recipe.epochs * len(clean_train) / len(keep))))
    log(f"clean rows of mix {ratio:g} alone: {len(keep)} of {len(clean_train)}, {r.epochs} epochs")
    acc, hist = train_and_test(clean_train.subset(keep), test, r, device, checkpoint=checkpoint, progress=progress,
                               desc="clean-rows victim", defenses=defenses, clean_train=clean_train)
    return acc, hist, len(keep), r.epochs


def evaluate(
    protected: ImageSet,
    clean: ImageSet,
    recipe: Recipe,
    device: str = "cpu",
    train_split: str = "train",
    test_split: str | None = None,
    hooks: Sequence[BatchHook] = (),
    work_dir: Path | None = None,
    progress: bool = False,
    clean_result: dict[str, Any] | None = None,
    defenses: Sequence[Defense] = (),
    mix: float = 1.0,
    mix_seed: int | None = None,
    floor: bool = False,
) -> dict[str, Any]:
    """Train victims on protected and clean training data; test both on the clean test split.

    Args:
        test_split: the clean split both victims are tested on (default: :func:`held_out_split`, ``test`` or
            else ``val``).
        defenses: training-time defences used by *both* victims (see :mod:`unlearnable.train.defenses`).
        mix: fraction of the training split that is protected (the rest clean), chosen by ``mix_seed``
            (default: the recipe's seed); 1.0 = everything protected.
        work_dir: where per-epoch checkpoints go (an interrupted audit resumes from them).
        clean_result: a previous clean run to reuse (``{"acc": .., "curve": [..]}``) when auditing several methods.
        floor: with ``0 < mix < 1``, also train a victim on the clean rows alone (:func:`clean_rows_floor`) and
            report it as ``clean_rows_acc``.
    Returns:
        The results dictionary written to ``results.json``.
    """
    test_split = test_split or held_out_split(clean, "--clean")
    check_pair(protected, clean, train_split, test_split)
    test = clean.split(test_split)
    ckpt = (lambda n: work_dir / f"{n}.ckpt") if work_dir is not None else (lambda n: None)
    t0 = time.perf_counter()
    log(f"victim '{recipe.model}': {recipe.epochs} epochs, global batch {recipe.batch_size} = "
        f"{D.world_size()} rank(s) x {D.per_rank_batch(recipe.batch_size)}, lr {recipe.scaled_lr():.4g} "
        f"({scaling_note(recipe.lr, recipe.base_batch, recipe.lr_scaling)}), device {device}")
    clean_train = clean.split(train_split)
    seed = recipe.seed if mix_seed is None else mix_seed
    prot_train, prot_rows = mix_protected(protected.split(train_split), clean_train, mix, seed)
    prot_acc, prot_hist = train_and_test(prot_train, test, recipe, device, hooks, ckpt("protected"), progress,
                                         "protected victim", defenses, clean_train)
    if clean_result is None:
        clean_acc, clean_hist = train_and_test(clean_train, test, recipe, device, hooks, ckpt("clean"), progress,
                                               "clean victim", defenses, clean_train)
        clean_curve, clean_wall = clean_hist.epochs, clean_hist.wall_s
    else:
        clean_acc, clean_curve, clean_wall = clean_result["acc"], clean_result["curve"], clean_result["wall_s"]
    extra: dict[str, Any] = {}
    curves: dict[str, Any] = {"protected": prot_hist.epochs, "clean": clean_curve}
    if floor and 0.0 < mix < 1.0 and len(prot_rows) < len(clean_train):
        acc, hist, rows, epochs = clean_rows_floor(clean_train, test, recipe, mix, seed, device, ckpt("floor"),
                                                   progress, defenses)
        extra = {"clean_rows_acc": acc, "clean_rows": {"rows": rows, "epochs": epochs}}
        curves["clean-rows only"] = hist.epochs  # its own colour in curves.png (not clean's)
    chance = chance_level(test.labels, clean.num_classes)
    valid, why = baseline_valid(clean_acc, chance)
    best_acc, best_at = best_epoch(prot_hist.epochs)
    return extra | {
        "valid": valid,  # False: the clean victim did not beat chance clearly, the run proves nothing
        "invalid_reason": why or None,
        "clean_acc": clean_acc,
        "protected_acc": prot_acc,
        # the protected victim's best epoch on the clean test split: what a trainer who keeps the best epoch on clean
        # held-out data would keep (the final epoch above is what the verdicts and the literature use)
        "protected_best_acc": best_acc,
        "protected_best_epoch": best_at,
        "gap": clean_acc - prot_acc,
        "relative_drop": (clean_acc - prot_acc) / clean_acc if clean_acc > 0 else 0.0,
        "chance_acc": chance,  # the test split's most frequent class (validity.chance_level)
        "chance_note": chance_note(test.labels, clean.classes) or None,  # which class, when it is not 1 / K
        # mean per-class recall on the clean test split (the clean one only when its victim was trained here)
        "protected_balanced_acc": balanced_accuracy(prot_hist.test_confusion),
        "clean_balanced_acc": balanced_accuracy(clean_hist.test_confusion) if clean_result is None else None,
        "protected_train_acc": prot_hist.epochs[-1]["train_acc"],
        "curves": curves,
        # rows: true class, columns: predicted class, on the clean test split (the clean victim's when trained here)
        "confusion": {"protected": prot_hist.test_confusion}
        | ({"clean": clean_hist.test_confusion} if clean_result is None else {}),
        "wall_s": {"protected": prot_hist.wall_s, "clean": clean_wall, "total": time.perf_counter() - t0},
        "recipe": asdict(recipe),
        "defenses": [d.spec for d in defenses],
        "mix": mix,
        "mix_seed": seed,
        "protected_samples": len(prot_rows),
        "setup": prot_hist.setup,
        "data": {"train": len(protected.split(train_split)), "test": len(test), "test_split": test_split,
                 "classes": clean.num_classes,
                 "image_shape": list(clean.images.shape[1:])},
        "unlearnable_version": __version__,
    }
