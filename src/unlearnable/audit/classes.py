"""Which classes a model still tells apart: per-class recall, precision and F1 from a confusion matrix, and the rule
that names a class "told apart" (used by ``protect --verify``, the colour-cue check and the efficacy benchmark)."""

from __future__ import annotations

from typing import Any

import torch

# a class the protected victim still "tells apart" on clean test images: recall and precision both above this (most
# of its images are recognised, and most images called that class are of it). Recall alone is not enough: a
# protected victim often sends most clean images to one default class, whose recall is then 100% at a precision near
# its share of the test split (docs/benchmarks.md, "Where the textures victim's accuracy comes from")
LEARNT_ABOVE = 0.5

def per_class(cm: list[list[int]], classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Recall, precision and F1 of each class from a confusion matrix (rows: true, columns: predicted)."""
    t = torch.tensor(cm, dtype=torch.float64)
    hit, true, said = t.diagonal(), t.sum(1), t.sum(0)
    out = []
    for k, name in enumerate(classes):
        rec = float(hit[k] / true[k]) if true[k] else 0.0
        prec = float(hit[k] / said[k]) if said[k] else 0.0
        f1 = 2 * rec * prec / (rec + prec) if rec + prec else 0.0
        out.append({"class": name, "test_images": int(true[k]), "recall": round(rec, 4), "precision": round(prec, 4),
                    "f1": round(f1, 4)})
    return out


def classes_learnt(rows: list[dict[str, Any]]) -> list[str]:
    """The classes of :func:`per_class` rows that a victim still tells apart: recall and precision both above
    :data:`LEARNT_ABOVE`."""
    return [c["class"] for c in rows if min(c["recall"], c["precision"]) > LEARNT_ABOVE]
