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


def balanced_accuracy(cm: list[list[int]] | None) -> float | None:
    """Mean per-class recall of a confusion matrix (rows: true classes), over the classes that have test images;
    None without a matrix. On an imbalanced split it separates a victim that learnt the classes from one that
    answers the commonest class (whose balanced accuracy is 1/K, while its accuracy is that class's share)."""
    if not cm:
        return None
    t = torch.tensor(cm, dtype=torch.float64)
    true = t.sum(1)
    return round(float((t.diagonal()[true > 0] / true[true > 0]).mean()), 4) if bool((true > 0).any()) else None


# on an imbalanced test split a class's share can itself pass LEARNT_ABOVE (two images in three are naevi on a
# skin-lesion set): a victim that calls every image that class gets its share as precision, so a class told apart
# also needs a precision this far above its share
ABOVE_SHARE = 0.15


def precision_floor(row: dict[str, Any], total: int, floor: float = LEARNT_ABOVE) -> float:
    """The precision a class of :func:`per_class` ``row`` must beat to count as told apart: ``floor``, and at least
    :data:`ABOVE_SHARE` above the class's share of the ``total`` test images (``floor`` itself on a balanced split
    of three or more classes)."""
    share = row["test_images"] / total if total else 0.0
    return max(floor, share + ABOVE_SHARE)


def learnt_rule(above: float = LEARNT_ABOVE, share: float | None = ABOVE_SHARE) -> str:
    """The told-apart rule of :func:`classes_learnt` in words, for the log and the reports alike (``share`` None:
    files from before the share rule, whose rule was the plain threshold)."""
    return f"recall and precision above {above:.0%}" + (
        f", precision also {100 * share:.0f} points above the class's share of the test images" if share else "")


def classes_learnt(rows: list[dict[str, Any]]) -> list[str]:
    """The classes of :func:`per_class` rows that a victim still tells apart: recall above :data:`LEARNT_ABOVE` and
    precision above :func:`precision_floor`."""
    total = sum(c["test_images"] for c in rows)
    return [c["class"] for c in rows if c["recall"] > LEARNT_ABOVE and c["precision"] > precision_floor(c, total)]
