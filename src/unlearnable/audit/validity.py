"""The validity rule of every audit: whether a clean victim learnt enough for protection to be measured."""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Exit status of evaluate/audit/sweep (and protect --verify) when a run finished but its clean victim did not learn
# the task: the numbers are written, but they prove nothing about the protection.
EXIT_INCONCLUSIVE = 3


def chance_level(labels: torch.Tensor | Sequence[int], num_classes: int) -> float:
    """The accuracy of a victim that learnt nothing from the images: the share of the most frequent class among
    the test split's ``labels`` (the no-information rate; ``1 / num_classes`` on a balanced split, or with no labels).

    On imbalanced data the uniform ``1 / K`` is the wrong floor. A victim that answers the commonest class for every
    image scores that class's share: 67% on a skin-lesion set where two images in three are naevi, against a uniform
    chance of 14% for its seven classes. Read against ``1 / K``, such a clean victim would pass the validity rule
    though it learnt only the class counts, and a protected victim that learnt nothing would read "not protected".
    """
    y = torch.as_tensor(labels, dtype=torch.long).flatten()
    if len(y) == 0:
        return 1.0 / max(1, num_classes)
    return max(float(torch.bincount(y, minlength=num_classes).max()) / len(y), 1.0 / max(1, num_classes))


def chance_note(labels: torch.Tensor | Sequence[int], classes: Sequence[str]) -> str:
    """``""`` when :func:`chance_level` is the uniform ``1 / K``, else a clause naming the class that sets it, for the
    sentences that quote chance (a reader of "chance 67%" for seven classes needs to know why)."""
    y = torch.as_tensor(labels, dtype=torch.long).flatten()
    k = len(classes)
    if len(y) == 0:
        return ""
    counts = torch.bincount(y, minlength=k)
    if float(counts.max()) / len(y) <= 1.0 / max(1, k) + 1e-9:  # chance_level is 1 / K
        return ""
    top = int(counts.argmax())
    return (f"chance is the share of the commonest class, '{classes[top]}', among the {len(y)} test images "
            f"(uniform chance {1.0 / k:.1%})")


def baseline_margin(chance: float) -> float:
    """How far above chance a clean victim must get: a quarter of the way from chance to 100%, at least 10 points.

    Protection is read as the drop from the clean victim's accuracy towards chance, so the clean victim must leave
    room for that drop: with 10 classes it needs 32.5% (chance 10%), with 2 classes 62.5%, with 37 classes 27%.

    Never more than half the way to 100%: on a split whose commonest class is above 80% of it (chance from
    :func:`chance_level`), ten points would ask 100% or more of a clean victim; at 90% it needs 95%. Unchanged for
    every chance up to 80%, so for every balanced split.
    """
    return min(max(0.1, 0.25 * (1.0 - chance)), 0.5 * (1.0 - chance))


def baseline_valid(clean_acc: float | None, chance: float) -> tuple[bool, str]:
    """Whether a clean victim learnt enough for a protected victim's accuracy to mean anything.

    Returns ``(valid, reason)``; ``reason`` is empty when valid, else one sentence a user can act on.
    """
    need = chance + baseline_margin(chance)
    if clean_acc is None or clean_acc != clean_acc:  # None or NaN: no test images were scored
        return False, "the clean victim was not scored (no test images)"
    if clean_acc >= need:
        return True, ""
    return False, (f"the clean victim reached {100 * clean_acc:.1f}% (chance {100 * chance:.1f}%, needs at least "
                   f"{100 * need:.1f}%): it did not learn the task, so a low protected accuracy proves nothing; "
                   f"train for more epochs or on more images")
