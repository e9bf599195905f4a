"""The validity rule of every audit: whether a clean victim learnt enough for protection to be measured."""

from __future__ import annotations

# Exit status of evaluate/audit/sweep (and protect --verify) when a run finished but its clean victim did not learn
# the task: the numbers are written, but they prove nothing about the protection.
EXIT_INCONCLUSIVE = 3


def baseline_margin(chance: float) -> float:
    """How far above chance a clean victim must get: a quarter of the way from chance to 100%, at least 10 points.

    Protection is read as the drop from the clean victim's accuracy towards chance, so the clean victim must leave
    room for that drop: with 10 classes it needs 32.5% (chance 10%), with 2 classes 62.5%, with 37 classes 27%.
    """
    return max(0.1, 0.25 * (1.0 - chance))


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
