"""What the images' own colour gives away: the classes a victim can tell apart from each image's colour (or, for grey
images, brightness) statistics alone, and whether a budget can bring those classes' mean colours together.

Why this exists: on every benchmark dataset where a protection leaves a victim above chance, the classes it still
recognises are the ones whose images differ from the rest in colour or brightness (docs/benchmarks.md, "Where the
textures victim's accuracy comes from" and "Key or victim seed against ResNet-18"), and such classes are learnt
in a victim's first epoch, before any shortcut. A change within L-inf ``eps`` moves an image's mean in each channel
by at most ``eps x 255`` grey levels, so two classes whose mean colours differ by more than ``2 x eps x 255``
levels in some channel stay apart in mean colour whatever a protection within that budget does. This module
measures both, on the clean data, in a fraction of a second:

* a multinomial logistic regression on each image's colour statistics (each channel's mean and standard deviation
  and a coarse joint colour histogram; no position, shape or texture) is fitted to the clean training split and
  scored on the clean held-out split: its accuracy, and per class recall and precision; the classes with both above
  :data:`~unlearnable.audit.classes.LEARNT_ABOVE` (and 25 points above chance: 75% for two classes) are *named by
  colour*;
* each class's mean colour and its distance, in grey levels (largest channel difference), to the nearest other
  class's mean.

It describes the data, not a protection: ``protect --verify`` writes it beside its verdict, so a user whose victim
still recognises some classes can see whether those are the classes their own colour names.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..data import ImageSet
from ..log import name_list
from .classes import LEARNT_ABOVE, per_class, precision_floor
from .validity import chance_level

L2 = 1e-3  # ridge penalty of the colour classifier, on standardised features
ITERS = 200  # L-BFGS iterations (the problem is convex and small: at most 70 features, K classes)
MAX_PIXELS = 4096  # larger images are read on a regular grid of about this many pixels (every step-th row/column)
CHUNK_VALUES = 1 << 24  # pixel values read at once by colour_features (16 M: ~130 MB as float64)
NAMED_MARGIN = 0.25  # a class named by colour: recall and precision above max(LEARNT_ABOVE, chance + this)
BINS = {1: 16, 3: 4}  # histogram cells per channel: 16 grey levels; 4 x 4 x 4 colour cells


def colour_features(images: torch.Tensor, index: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """``(N, 2 C + B)`` float64: each channel's mean and standard deviation in grey levels, then the image's joint
    colour histogram (the share of its pixels in each of :data:`BINS` ``** C`` colour cells: 64 for RGB, 16 for
    grey), for ``images[index]`` (all of them when None; uint8 ``(N, C, H, W)``), read ``chunk`` images at a time
    (default: :data:`CHUNK_VALUES` pixel values' worth) so that a large set is never copied whole. Images of more
    than :data:`MAX_PIXELS` pixels are read on a regular grid of about that many (every ``step``-th row and column):
    these are statistics of the whole image, and a 500-px photograph costs what a 64-px one does."""
    c = images.shape[1]
    b = BINS[c]
    index = torch.arange(images.shape[0]) if index is None else index
    h, w = images.shape[-2:]
    step = max(1, math.ceil(math.sqrt(h * w / MAX_PIXELS)))  # statistics: a regular grid of pixels is enough
    if chunk is None:  # about CHUNK_VALUES pixel values at a time (float64 and int64 copies), whatever the image size
        chunk = max(1, CHUNK_VALUES // max(1, c * -(-h // step) * -(-w // step)))
    out = []
    for i in range(0, len(index), chunk):
        x = images[index[i:i + chunk], :, ::step, ::step]
        flat = x.double().flatten(2)
        q = x.long().mul(b).div(256, rounding_mode="floor").flatten(2)  # (n, C, HW) cell index per channel
        cell = q[:, 0]
        for ch in range(1, c):
            cell = cell * b + q[:, ch]
        hist = torch.zeros(len(x), b ** c, dtype=torch.float64).scatter_add_(
            1, cell, torch.ones_like(cell, dtype=torch.float64)) / max(cell.shape[1], 1)
        out.append(torch.cat([flat.mean(2), flat.std(2, correction=0), hist], 1))
    return torch.cat(out) if out else torch.zeros(0, 2 * c + b ** c, dtype=torch.float64)


def fit_softmax(x: torch.Tensor, y: torch.Tensor, k: int, l2: float = L2, iters: int = ITERS):
    """A multinomial logistic regression on standardised ``x``; returns a function from features to predicted
    classes. Deterministic: zero start, full-batch L-BFGS."""
    mu, sd = x.mean(0), x.std(0, correction=0).clamp(min=1e-6)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        v = F.cross_entropy(z @ w + b, y) + l2 * (w * w).sum()
        v.backward()
        return v

    with torch.enable_grad():
        opt.step(loss)
    w_, b_ = w.detach(), b.detach()
    return lambda f: (((f - mu) / sd) @ w_ + b_).argmax(1)


def colour_cues(ds: ImageSet, test_split: str, eps: float | None = None) -> dict[str, Any]:
    """The colour-statistics classifier's accuracy and per-class results on the clean ``test_split`` (fitted on the
    clean ``train`` split), each class's mean colour and distance to the nearest other class, and, for an L-inf
    budget ``eps`` (a fraction of 255; None or 0: no budget), which of the classes named by colour lie further apart
    than the budget can close (``2 x eps x 255`` levels); ``summary`` is :func:`describe`'s sentence (None when no
    class is named)."""
    k = ds.num_classes
    tr, te = ds.indices("train"), ds.indices(test_split)
    y_tr, y_te = ds.labels[tr], ds.labels[te]
    f_tr, f_te = colour_features(ds.images, tr), colour_features(ds.images, te)
    predict = fit_softmax(f_tr, y_tr, k)
    pred = predict(f_te)
    cm = torch.zeros(k, k, dtype=torch.long)
    cm.index_put_((y_te, pred), torch.ones_like(y_te), accumulate=True)
    rows = per_class(cm.tolist(), ds.classes)
    c = ds.channels
    counts = torch.bincount(y_tr, minlength=k).double()
    means = torch.zeros(k, c, dtype=torch.float64).index_add_(0, y_tr, f_tr[:, :c]) / counts.clamp(min=1)[:, None]
    gap = (means[:, None, :] - means[None, :, :]).abs().amax(2)  # (K, K) largest channel difference, grey levels
    gap.fill_diagonal_(float("inf"))
    present = counts > 0
    gap[:, ~present] = float("inf")
    for i, r in enumerate(rows):
        j = int(gap[i].argmin())
        near = bool(present[i]) and k > 1 and bool(torch.isfinite(gap[i, j]))
        r["mean_colour"] = [round(float(v), 1) for v in means[i]]
        r["nearest"] = ds.classes[j] if near else None
        r["gap_levels"] = round(float(gap[i, j]), 1) if near else None
    # named: recall and precision both above the verdicts' LEARNT_ABOVE and at least 25 points above chance (two
    # classes: 75%), so that a weak cue on a task with few classes is not reported as a name
    # (and, for precision, 25 points above the class's share of the test split: on imbalanced data a classifier that
    # answers the commonest class everywhere would otherwise name it)
    above = max(LEARNT_ABOVE, 1.0 / k + NAMED_MARGIN)
    named = [r["class"] for r in rows
             if r["recall"] > above and r["precision"] > max(above, precision_floor(r, len(te), 0.0))]
    out: dict[str, Any] = {
        "cue": "colour" if c > 1 else "brightness",
        "features": (f"each channel's mean and standard deviation and a {BINS[c] ** c}-cell "
                     f"{'colour' if c > 1 else 'grey-level'} histogram ({2 * c + BINS[c] ** c} numbers per image)"),
        "test_split": test_split, "acc": round(float((pred == y_te).double().mean()) if len(te) else 0.0, 4),
        "chance": round(chance_level(y_te, k), 4), "named": named, "named_above": round(above, 4), "per_class": rows}
    if eps is not None and eps > 0:  # 0: a method's unbudgeted setting (the published CUDA filters)
        budget = float(eps) * 255
        out["budget_levels"] = round(budget, 2)
        out["apart_beyond_budget"] = [r["class"] for r in rows
                                      if r["class"] in named and (r["gap_levels"] or 0) > 2 * budget]
    out["summary"] = describe(out)  # the sentence logs print, stored so that reports read it without this module
    return out


def describe(cues: dict[str, Any]) -> str | None:
    """One sentence for the log and the report about the classes named by colour, or None when there are none."""
    named = cues.get("named") or []
    if not named:
        return None
    cue = cues.get("cue", "colour")
    rows = {r["class"]: r for r in cues["per_class"]}
    apart = cues.get("apart_beyond_budget") or []
    text = (f"the images' own {cue} alone tells apart {name_list(named)} (a linear classifier on "
            f"{cues['features']}: {cues['acc']:.1%} on clean '{cues['test_split']}' images, chance "
            f"{cues['chance']:.1%})")
    if apart:
        gaps = name_list([f"{rows[n]['gap_levels']:.0f}" for n in apart])
        text += (f"; the mean {cue} of {name_list(apart)} lies {gaps} grey levels from the nearest other class's, "
                 f"more than twice the budget ({cues['budget_levels']:g} levels) can close")
    return text
