"""``protect --verify`` and ``--target-acc``: protection that checks itself before it is written.

A short independent victim (an architecture no method used as its surrogate, standard crop/flip augmentation) is
trained on the protected training split and on its clean twin with the same recipe; both are tested on the clean
test split. The verdict says "protected" only when the protected victim is within :data:`PROTECTED_MARGIN` of
chance *and* the clean twin learnt (a run whose clean victim did not learn proves nothing: "invalid", by the same
rule as every audit, :func:`~unlearnable.audit.validity.baseline_valid`; the command then exits with status 3).

``--verify-victim a,b`` trains several victims (each on the protected split and on its own clean twin): whether a
protection holds depends on the victim's family (max-pool networks follow the tiles where strided-convolution
networks do not, docs/methods.md), so a release can be checked against each family it must resist. The verdict is
the worst victim's: "protected" only when every victim is within the margin of chance, "invalid" when any clean twin
did not learn; the manifest's top-level fields are the worst victim's and ``victims`` lists each one.

``--target-acc X`` searches the smallest L-inf budget whose protected accuracy is at most ``X`` (for every victim):
one fit at the method's maximum budget (if that fails, nothing is written), then bisection over whole grey levels,
at most :data:`MAX_FITS` fits in all. The clean twins are trained once and reused.

Every victim checkpoints after each epoch into ``.OUT.partial/verify/`` (:func:`victim_dir`), so ``protect
--resume`` continues an interrupted verification instead of training it again.

Data flows one way: the protect command hands this module a ``review`` callback; :mod:`unlearnable.protect` never
imports audit code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import ImageSet
from ..data.imageset import levels_to_uint8
from ..data.quality import psnr
from ..errors import UserError
from ..log import log, name_list, progress_enabled
from ..models import MODELS
from ..protect.base import Protection, eps_levels
from ..runtime.checkpoint import fingerprint
from ..train.defenses import parse_defense
from ..train.loop import Recipe
from .classes import ABOVE_SHARE, LEARNT_ABOVE, balanced_accuracy, classes_learnt, learnt_rule, per_class
from .cues import colour_cues
from .evaluate import best_epoch, evaluate, held_out_split, warn_unscored
from .validity import baseline_valid, chance_level, chance_note

PROTECTED_MARGIN = 0.10  # "protected": protected accuracy <= chance + 10 points
MAX_FITS = 6
VERIFY_AUG = "aug"  # random crop (pad 4) + horizontal flip: the standard recipe a data thief would use
MIN_SIZE, MAX_SIZE = 8, 1024  # --verify-size bounds (pixels per side)
SCORES = ("final", "best")  # --verify-score: the protected victim's final epoch, or its best one
# Epochs of each --verify victim (and of the demo's). 16, not 8: on ten fixed keys per dataset an 8-epoch small CNN
# often stopped mid-swing between the shortcut and the content (digits 2 of 10 keys above chance + 10, none at 16;
# photographs 49.1% against 38.3%, the converged victim's 39.3%), docs/benchmarks.md "The demo and the test suite".
VERIFY_EPOCHS = 16

# Fit the protection ({} = as asked, else with these parameters overridden) and apply it to the training split:
# overrides -> (data with the protected training split, perturbation, method instance).
Fit = Callable[[dict[str, Any]], tuple[ImageSet, Any, Protection]]


@dataclass(frozen=True)
class VerifyOptions:
    # auto: the first of AUTO_VICTIMS that the method did not use as a surrogate; or one or more registered models,
    # comma-separated (every one is trained; the verdict is the worst of them)
    victim: str = "auto"
    epochs: int = VERIFY_EPOCHS
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    target_acc: float | None = None
    device: str = "cpu"
    precision: str = "fp32"  # the protect command's --precision, --sync-bn and --compile, for its victims too
    sync_bn: bool = False
    compile: bool = False
    # train and test both victims on images resized to size x size (antialiased), as a trainer who downscales the
    # published images would; None: the working size. Tiles made at one resolution do not survive a 2x downscale
    # on colour photographs (docs/methods.md), so a release that will be downscaled is checked at that size.
    size: int | None = None
    # which epoch of the protected victim the verdict and --target-acc score: "final" (the papers' rule) or "best"
    # (its best epoch on the clean test split: what a trainer who keeps the best epoch on clean held-out data gets)
    score: str = "final"

    def validate(self) -> None:
        if self.score not in SCORES:
            raise UserError(f"--verify-score {self.score}: must be one of {', '.join(SCORES)}")
        if self.target_acc is not None and not 0.0 < self.target_acc < 1.0:
            raise UserError(f"--target-acc {self.target_acc}: must be a fraction in (0, 1), e.g. 0.2")
        Recipe(precision=self.precision).accel().validate()
        if self.epochs < 1:
            raise UserError(f"--verify-epochs {self.epochs}: must be at least 1")
        names = self.victims()
        if "auto" in names and len(names) > 1:
            raise UserError(f"--verify-victim {self.victim}: 'auto' stands alone; name the victims instead")
        if len(set(names)) < len(names):
            raise UserError(f"--verify-victim {self.victim}: a victim is named twice")
        for name in names:
            if name != "auto":
                MODELS.get(name)
        if self.size is not None and not MIN_SIZE <= self.size <= MAX_SIZE:
            raise UserError(f"--verify-size {self.size}: must be {MIN_SIZE}..{MAX_SIZE} pixels")

    def victims(self) -> list[str]:
        """The names given to ``--verify-victim`` (``["auto"]`` by default)."""
        names = [n.strip() for n in self.victim.split(",")]
        if any(not n for n in names):
            raise UserError(f"--verify-victim {self.victim}: an empty victim name")
        return names


def check_searchable(algo: Protection) -> None:
    """``--target-acc`` searches an L-inf ``eps``; a method without one cannot be searched."""
    if not hasattr(algo.params, "eps") or getattr(algo.params, "norm", "linf") != "linf":
        raise UserError(f"--target-acc: method '{algo.name}' has no L-inf budget (eps) to search")


def check_verifiable(ds: ImageSet) -> None:
    """A verification needs a clean test split and at least two classes."""
    if ds.num_classes < 2:
        raise UserError(f"--verify: the data has {ds.num_classes} class; a victim needs at least 2 to be tested")
    split = held_out_split(ds, "--verify")
    if split != "test":
        log(f"verify: testing the victims on the clean '{split}' split (the data has no 'test' split)")
    warn_unscored(ds, split, "verify: ", "the verdict says")


#: ``--verify-victim auto``: the first of these that no surrogate of the method used
AUTO_VICTIMS = ("smallcnn", "resnet18", "resnet18-narrow", "vgg16")
#: victims with max pools at full resolution: they follow the tiles, which networks that downsample with strided
#: convolutions (ResNet-18, MobileNetV2) follow far less (docs/methods.md, ``tiles``), so a verdict of these alone is
#: the optimistic one for ``tiles``
MAX_POOL_VICTIMS = frozenset({"smallcnn", "vgg16"})


def pick_victims(opts: VerifyOptions, algo: Protection) -> list[str]:
    """The victims must differ from every surrogate the method trained (else the check flatters the method)."""
    used = algo.models_trained()
    names = opts.victims()
    if names == ["auto"]:
        return [next(v for v in AUTO_VICTIMS if v not in used)]
    for name in names:
        if name in used:
            raise UserError(f"--verify-victim {name}: the method used it as its surrogate; pick another")
    return names


def verdict(clean_acc: float, protected_acc: float, chance: float, what: str = "protected accuracy",
            balanced: float | None = None, uniform: float | None = None) -> tuple[str, str]:
    """(verdict, reason). "invalid" when the clean twin did not learn (the audits' one rule,
    :func:`~unlearnable.audit.validity.baseline_valid`); "protected" within 10 points of chance. ``what`` names the
    accuracy scored (the final epoch's by default).

    On an imbalanced test split (``chance`` above the ``uniform`` 1/K) accuracy alone can hide a victim that learnt
    the less common classes: one that tells five of ten rare classes apart and misses the commonest scores near its
    share. There "protected" also needs the ``balanced`` accuracy (mean per-class recall) within 10 points of 1/K;
    on a balanced split the two conditions are one."""
    valid, why = baseline_valid(clean_acc, chance)
    if not valid:
        return "invalid", why.replace("train for more epochs or on more images",
                                      "raise --verify-epochs or use more images")
    if protected_acc <= chance + PROTECTED_MARGIN:
        if (balanced is not None and uniform is not None and chance > uniform + 1e-9
                and balanced > uniform + PROTECTED_MARGIN):
            return "not protected", (f"{what} {protected_acc:.1%} is within 10 points of chance ({chance:.1%}), but "
                                     f"its balanced accuracy {balanced:.1%} is more than 10 points above 1/K "
                                     f"({uniform:.1%}): it still tells some of the less common classes apart")
        return "protected", f"{what} {protected_acc:.1%} is within 10 points of chance ({chance:.1%})"
    return "not protected", (f"{what} {protected_acc:.1%} is more than 10 points above chance "
                             f"({chance:.1%}; clean {clean_acc:.1%})")


KEEPS_BEST = "which a trainer who keeps the epoch that scores best on clean held-out data would keep"


def learnt_earlier(verdict_: str, best_acc: float | None, chance: float) -> bool:
    """A "protected" verdict whose victim passed through an epoch *not* within 10 points of chance."""
    return verdict_ == "protected" and best_acc is not None and best_acc > chance + PROTECTED_MARGIN


def best_epoch_note(verdict_: str, best_acc: float | None, best_at: int | None, chance: float) -> str:
    """The sentence a "protected" verdict gets when :func:`learnt_earlier` ("" otherwise): the verdict is the final
    epoch's, and a trainer who keeps the best epoch on clean held-out data keeps that one."""
    if not learnt_earlier(verdict_, best_acc, chance):
        return ""
    return f"; but at epoch {best_at} the protected victim reached {best_acc:.1%}, {KEEPS_BEST}"


def at_size(ds: ImageSet, size: int | None, chunk: int = 256) -> ImageSet:
    """``ds`` with every image resized to ``size`` x ``size`` by antialiased bilinear interpolation (what
    torchvision's ``Resize`` does to tensors), rounded back to uint8; ``ds`` itself when ``size`` is None or already
    its size."""
    if size is None or tuple(ds.size) == (size, size):
        return ds
    out = torch.empty(len(ds), ds.channels, size, size, dtype=torch.uint8)
    for i in range(0, len(ds), chunk):
        x = ds.images[i:i + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i:i + chunk] = levels_to_uint8(y.round_().clamp_(0, 255))
    return ds.with_images(out)


def _measure(view: ImageSet, protected: ImageSet, recipe: Recipe, device: str,
             clean_result: dict[str, Any] | None, size: int | None = None,
             work: Path | None = None) -> dict[str, Any]:
    """Train and test the victims; ``view`` is the clean data already at the victims' size (``at_size``, once per
    review), ``protected`` is resized here. With ``work`` both victims checkpoint every epoch into
    :func:`victim_dir` and continue from there."""
    aug = [parse_defense(VERIFY_AUG)]
    return evaluate(at_size(protected, size), view, recipe, device=device, defenses=aug,
                    clean_result=clean_result, progress=progress_enabled(),
                    work_dir=victim_dir(work, protected, recipe, size))


def victim_dir(work: Path | None, protected: ImageSet, recipe: Recipe, size: int | None) -> Path | None:
    """The folder of one victim's checkpoints (``protected.ckpt``, and ``clean.ckpt`` for its clean twin) under
    ``work``, named by the victim and a digest of what it trains on: the protected training split (images and labels),
    the recipe and ``--verify-size``. A ``--resume`` continues a victim only on the same images with the same
    settings; another key, budget (each ``--target-acc`` fit) or recipe gets a folder of its own and starts afresh.
    The digest (:func:`~unlearnable.runtime.checkpoint.fingerprint`) covers pixels that the output publishes anyway."""
    if work is None:
        return None
    tag = fingerprint([asdict(recipe), size], protected.images, protected.labels, rows=protected.indices("train"))
    return work / f"{recipe.model}-{tag}"


def _mean_psnr(ds: ImageSet, protected: ImageSet) -> float | None:
    idx = ds.indices("train")
    vals = psnr(ds.images[idx], protected.images[idx])
    finite = vals[torch.isfinite(vals)]
    return round(float(finite.mean()), 2) if len(finite) else None


def make_review(opts: VerifyOptions) -> Callable[..., tuple[Any, Protection, dict[str, Any]]]:
    """The callback ``protect_source`` runs in place of its own fit: it fits through ``fit`` (once for
    ``--verify``, once per budget tried for ``--target-acc``), verifies, and returns (perturbation, method,
    manifest entries) before anything is written. ``review.check(data, method)`` runs on a pixel-free view of the
    data before any work."""
    opts.validate()

    def check(ds: ImageSet, algo: Protection) -> None:
        check_verifiable(ds)
        if opts.target_acc is not None:
            check_searchable(algo)

    def review(ds: ImageSet, algo: Protection, fit: Fit, work: Path | None = None
               ) -> tuple[Any, Protection, dict[str, Any]]:
        victims = pick_victims(opts, algo)
        recipes = [Recipe(model=v, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
                          precision=opts.precision, sync_bn=opts.sync_bn, compile=opts.compile) for v in victims]
        chance = chance_level(ds.labels[ds.indices(held_out_split(ds, "--verify"))], ds.num_classes)
        at = f", resized to {opts.size}x{opts.size}" if opts.size else ""
        names = ", ".join(f"'{v}'" for v in victims)
        log(f"verify: training {'a ' if len(victims) == 1 else ''}{names} victim{'s' if len(victims) > 1 else ''} "
            f"for {opts.epochs} epochs (crop/flip augmentation{at}) on the protected and on the clean training split")
        view = at_size(ds, opts.size)  # the clean twin at the victims' size, for every fit tried
        if opts.target_acc is None:
            protected, pert, a = fit({})
            entries = [_entry(ds, protected, _measure(view, protected, r, opts.device, None, opts.size, work), r,
                              chance, a, opts.size, opts.score) for r in recipes]
            entry = combine(entries)
            log(f"verify: {entry['verdict']}: {entry['reason']}")
            _say_learnt(entry)
            _say_scope(entry, victims, a)
            _add_cues(entry, ds, a)
            return pert, a, {"verify": entry}
        pert, a, entry = _search(ds, view, algo, fit, recipes, chance, opts, work)
        _say_scope(entry["verify"], victims, a)
        _add_cues(entry["verify"], ds, a)
        return pert, a, entry

    review.check = check  # type: ignore[attr-defined]
    return review


#: the fields of each victim kept in a several-victim entry's ``victims`` list
VICTIM_FIELDS = ("victim", "epochs", "clean_acc", "protected_acc", "best_acc", "best_epoch", "scored_acc", "verdict",
                 "reason", "classes_learnt", "wall_s")


def combine(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One manifest entry from one verification per victim: the worst victim's entry (an invalid one first, else the
    highest protected accuracy) with the verdict over all of them and, for several victims, ``victims`` (each one's
    :data:`VICTIM_FIELDS`). A single victim's entry is returned as it is."""
    if len(entries) == 1:
        return entries[0]
    invalid = [e for e in entries if e["verdict"] == "invalid"]
    worst = invalid[0] if invalid else max(entries, key=_scored)
    out = dict(worst)
    if worst["verdict"] == "protected":  # the worst is protected (and none invalid): so is every victim
        at = " at their best epochs" if worst.get("score") == "best" else ""
        out["reason"] = f"every victim is within 10 points of chance{at} (" + ", ".join(
            f"{e['victim']} {_scored(e):.1%}" for e in entries) + f"; chance {worst['chance']:.1%})"
        if worst.get("chance_note"):
            out["reason"] += f"; {worst['chance_note']}"
        early = [f"{e['victim']} {e['best_acc']:.1%} at epoch {e['best_epoch']}" for e in entries
                 if learnt_earlier(e["verdict"], e.get("best_acc"), e["chance"])]
        if early:
            out["reason"] += f"; but at their best epochs {', '.join(early)}, {KEEPS_BEST}"
    else:
        out["reason"] = f"{worst['victim']}: {worst['reason']}"
    out["victims"] = [{k: e[k] for k in VICTIM_FIELDS} for e in entries]
    return out


def _scored(e: dict[str, Any]) -> float:
    """The accuracy an entry's verdict scored (``--verify-score``); entries from before the option: the final one."""
    return e.get("scored_acc", e["protected_acc"])


def _entry(ds: ImageSet, protected: ImageSet, r: dict[str, Any], recipe: Recipe, chance: float,
           algo: Protection, size: int | None = None, score: str = "final") -> dict[str, Any]:
    best_acc, best_at = best_epoch(r["curves"]["protected"])
    balanced = balanced_accuracy(r["confusion"]["protected"])
    if score == "best" and best_acc is not None:
        scored = best_acc
        v, why = verdict(r["clean_acc"], scored, chance, f"the protected victim's best epoch ({best_at}) reached")
    else:
        scored = r["protected_acc"]
        # the final epoch's confusion gives its balanced accuracy too (the per-epoch curves hold accuracy only)
        v, why = verdict(r["clean_acc"], scored, chance, balanced=balanced, uniform=1.0 / ds.num_classes)
        why += best_epoch_note(v, best_acc, best_at, chance)
    note = chance_note(ds.labels[ds.indices(r["data"]["test_split"])], ds.classes)  # labels only: no image copy
    why += f"; {note}" if note else ""
    classes = per_class(r["confusion"]["protected"], ds.classes)
    h, w = ds.size
    return {"victim": recipe.model, "epochs": recipe.epochs, "augmentation": "crop(pad 4)+flip",
            # the resolution the victims trained and were tested at (the working size unless --verify-size)
            "victim_size": [size, size] if size else [h, w], "resized": bool(size) and (size, size) != (h, w),
            "test_split": r["data"]["test_split"],
            "precision": recipe.precision,
            "clean_acc": round(r["clean_acc"], 4), "protected_acc": round(r["protected_acc"], 4),
            # the protected victim's best epoch on the clean test split (the verdict uses the final one)
            "best_acc": None if best_acc is None else round(best_acc, 4), "best_epoch": best_at,
            # what the verdict (and --target-acc) scored: the final epoch's accuracy, or the best one's (score)
            "score": score, "scored_acc": round(scored, 4),
            "chance": round(chance, 4), "chance_note": note or None,  # which class sets chance, when not 1/K
            # mean per-class recall of the protected victim: 1/K for one that answers a single class everywhere
            "balanced_acc": balanced,
            "psnr": _mean_psnr(ds, protected), "eps": getattr(algo.params, "eps", None),
            "verdict": v, "reason": why, "recipe": asdict(recipe),
            # which classes leak: the protected victim's recall/precision/F1 per class on the clean test split, and
            # the classes it still tells apart (recall and precision > LEARNT_ABOVE, precision > share + ABOVE_SHARE)
            "per_class": classes, "classes_learnt": classes_learnt(classes), "learnt_above": LEARNT_ABOVE,
            "above_share": ABOVE_SHARE,
            "confusion": r["confusion"]["protected"],
            # per-epoch curves and times, so a report can draw the verification without training again
            "curves": r["curves"], "wall_s": r["wall_s"]}


def _say_learnt(entry: dict[str, Any]) -> None:
    if entry["classes_learnt"]:
        log(f"verify: the protected victim still tells apart {name_list(entry['classes_learnt'])} on clean test "
            f"images ({learnt_rule()}; manifest verify.per_class)")


def _say_scope(entry: dict[str, Any], victims: list[str], algo: Protection) -> None:
    """A *protected* verdict on ``tiles`` from max-pool victims alone says so on the console: the benchmark's deeper,
    strided victims learnt far more from the same tiles (the report's scope paragraph says the same at length)."""
    if algo.name == "tiles" and entry["verdict"] == "protected" and set(victims) <= MAX_POOL_VICTIMS:
        log(f"verify: this covers max-pool networks only ({', '.join(victims)}); networks that downsample with "
            "strided convolutions (ResNet-18, MobileNetV2) learnt far more from the same tiles in the benchmark "
            f"(docs/methods.md): confirm with --verify-victim {','.join(victims)},resnet18 --verify-epochs 40 "
            "(resnet18-narrow on a CPU) before a release")


def _add_cues(entry: dict[str, Any], ds: ImageSet, algo: Protection) -> None:
    """The data's colour cues (:mod:`unlearnable.audit.cues`) at the budget chosen, beside the verdict: whether the
    classes a victim still tells apart are the ones the images' own colour names."""
    cues = colour_cues(ds, held_out_split(ds, "--verify"), algo.linf_budget())
    entry["colour_cues"] = cues
    if cues["summary"]:
        log(f"verify: {cues['summary']} (manifest verify.colour_cues)")


def _search(ds: ImageSet, view: ImageSet, algo: Protection, fit: Fit, recipes: list[Recipe], chance: float,
            opts: VerifyOptions, work: Path | None = None) -> tuple[Any, Protection, dict[str, Any]]:
    target = float(opts.target_acc)  # type: ignore[arg-type]
    hi = eps_levels(type(algo).max_eps)
    tried: list[dict[str, Any]] = []
    clean: list[dict[str, Any] | None] = [None] * len(recipes)  # each victim's clean twin, trained once
    best: tuple[Any, Protection, dict[str, Any]] | None = None
    at = " at its best epoch" if opts.score == "best" else ""  # how the search's log and refusal name the score

    def attempt(level: int) -> bool:
        nonlocal best
        prot, pert, a = fit({"eps": f"{level}/255"})
        entries = []
        for i, recipe in enumerate(recipes):
            r = _measure(view, prot, recipe, opts.device, clean[i], opts.size, work)
            if clean[i] is None:
                clean[i] = {"acc": r["clean_acc"], "curve": r["curves"]["clean"], "wall_s": r["wall_s"]["clean"]}
                learnt, why = verdict(r["clean_acc"], 0.0, chance)
                if learnt == "invalid":
                    who = f" ({recipe.model})" if len(recipes) > 1 else ""
                    raise UserError(f"--target-acc{who}: {why}")
            entries.append(_entry(ds, prot, r, recipe, chance, a, opts.size, opts.score))
        e = combine(entries)  # the worst victim: the target must hold for every one
        ok = _scored(e) <= target
        tried.append({"eps": f"{level}/255", "protected_acc": e["protected_acc"], "scored_acc": _scored(e),
                      "psnr": e["psnr"], "met": ok, "victim": e["victim"]})  # the worst victim at this budget
        log(f"target {target:.1%}: eps {level}/255 -> protected accuracy{at} {_scored(e):.1%} "
            f"({'met' if ok else 'not met'})")
        if ok:
            best = (pert, a, e)
        return ok

    if not attempt(hi):
        cues = colour_cues(ds, held_out_split(ds, "--verify"))
        why = (f"; the images' own {cues['cue']} alone tells apart {name_list(cues['named'])} (a linear classifier on "
               f"colour statistics: {cues['acc']:.1%}, chance {cues['chance']:.1%})" if cues["named"] else "")
        raise UserError(f"--target-acc {target}: not met by '{algo.name}' at its maximum budget {hi}/255 "
                        f"(protected accuracy{at} {tried[-1]['scored_acc']:.1%}{why}); nothing written")
    lo = 0  # levels <= lo are known (or assumed at 0) not to meet the target
    while hi - lo > 1 and len(tried) < MAX_FITS:
        mid = max(lo + 1, int(round(math.sqrt(max(lo, 1) * hi))))  # geometric: budgets span 1..64 grey levels
        mid = min(mid, hi - 1)
        if attempt(mid):
            hi = mid
        else:
            lo = mid
    assert best is not None
    pert, a, e = best
    e["target_acc"] = target
    e["search"] = tried
    log(f"target {target:.1%}: chose eps {hi}/255 (PSNR {e['psnr']} dB) after {len(tried)} fit(s)")
    _say_learnt(e)
    return pert, a, {"verify": e}
