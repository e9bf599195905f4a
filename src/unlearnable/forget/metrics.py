"""Metrics for unlearning: Dice (MONAI), MAE, membership-inference AUC, the seed study's headline figures.

Definitions (also in docs/unlearning.md):

- **Dice** per class k: ``2|P_k ∩ G_k| / (|P_k| + |G_k|)`` on the argmax prediction (MONAI ``compute_dice``); a class
  absent from both prediction and ground truth scores 1, absent from the ground truth only 0. The reported
  ``dice`` is the mean over *scored* classes (background and MRBrainS18 labels 9/10 excluded), then over subjects.
- **MAE**: the mean absolute error between the softmax probabilities and the one-hot ground truth,
  ``1/(|V||K|) Σ_v Σ_{k∈K} |p_k(v) − [y(v) = k]|`` over voxels V and scored classes K, averaged over subjects.
  0 is a perfect, confident model; it rises both with errors and with lost confidence, which Dice does not see.
- **MIA AUC**: a loss-threshold membership-inference attack (Yeom et al., 2018). Score = −(mean voxel
  cross-entropy of a subject); AUC of telling forget subjects (members before unlearning) from held-out test
  subjects. 0.5 = indistinguishable, which is what a model never trained on the forget subjects gives in expectation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.metrics import compute_dice

from ..runtime.distributed import all_reduce_sum
from ..segment.infer import predict_logits


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of every class: pred, target ``(D, H, W)`` int → ``(K,)`` float."""
    p = F.one_hot(pred.long(), num_classes).movedim(-1, 0)[None].float()
    t = F.one_hot(target.long(), num_classes).movedim(-1, 0)[None].float()
    return compute_dice(p, t, include_background=True, ignore_empty=False)[0].float()


def mae(probs: torch.Tensor, target: torch.Tensor, classes: Sequence[int]) -> float:
    """MAE between probabilities ``(K, D, H, W)`` and the one-hot of ``target`` ``(D, H, W)`` over ``classes``."""
    idx = torch.as_tensor(list(classes), dtype=torch.long)
    onehot = F.one_hot(target.long(), probs.shape[0]).movedim(-1, 0).float()
    return float((probs[idx] - onehot[idx]).abs().mean())


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """ROC AUC = P(score_pos > score_neg) + ½ P(tie) (Mann–Whitney U); NaN when a side is empty."""
    p, n = torch.as_tensor(list(pos), dtype=torch.float64), torch.as_tensor(list(neg), dtype=torch.float64)
    if not len(p) or not len(n):
        return float("nan")
    diff = p[:, None] - n[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def mia_auc(member_loss: Sequence[float], nonmember_loss: Sequence[float]) -> float:
    """Loss-threshold attack: lower loss ⇒ "member"; AUC of members (forget) vs non-members (test)."""
    return auc([-x for x in member_loss], [-x for x in nonmember_loss])


def headline(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """The seed study's figures: forget Dice drop % and retain Dice kept %, from two ``{split: {"dice"}}`` dicts."""
    bf, br = before["forget"]["dice"], before["retain"]["dice"]
    return {"forget_drop_pct": 100.0 * (1.0 - after["forget"]["dice"] / bf) if bf else float("nan"),
            "retain_kept_pct": 100.0 * after["retain"]["dice"] / br if br else float("nan")}


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, scored: Sequence[int],
             patch: int, device: str = "cpu") -> dict[str, Any]:
    """Dice, MAE and per-subject loss of ``model`` on ``images`` ``(N, C, D, H, W)`` / ``labels`` ``(N, D, H, W)``.

    Work is sharded over ranks and summed with an all-reduce (every subject counted once), so every rank returns
    the same numbers. Returns ``{"dice", "mae", "dice_per_class": [K], "loss": [N], "subject_dice": [N],
    "features": [N][F]}`` where a subject's membership features are (see forget/mia.py) its mean voxel loss,
    mean confidence (max softmax probability), mean entropy and per-class Dice.
    """
    n = len(images)
    if n == 0:
        return {"dice": float("nan"), "mae": float("nan"), "dice_per_class": [], "loss": [], "subject_dice": [],
                "features": []}
    scored = list(scored)
    table = torch.zeros(n, 5 + len(scored), dtype=torch.float64)  # dice, mae, loss, confidence, entropy, per class
    for i, logits in predict_logits(model, images, patch, device):
        k = logits.shape[0]
        d = dice_per_class(logits.argmax(0), labels[i], k)[scored]
        probs = logits.softmax(0)
        loss = F.cross_entropy(logits[None], labels[i][None].long())
        conf = probs.max(0).values.mean()
        entropy = -(probs * logits.log_softmax(0)).sum(0).mean()
        table[i] = torch.cat([torch.tensor([float(d.mean()), mae(probs, labels[i], scored), float(loss), float(conf),
                                            float(entropy)]), d.double()])
    table = all_reduce_sum(table)
    return {"dice": float(table[:, 0].mean()), "mae": float(table[:, 1].mean()),
            "dice_per_class": table[:, 5:].mean(0).tolist(), "loss": table[:, 2].tolist(),
            "subject_dice": table[:, 0].tolist(), "features": table[:, 2:].tolist()}


def public(m: dict[str, Any]) -> dict[str, Any]:
    """The part of an :func:`evaluate` result that goes into results.json (no per-subject values)."""
    return {"dice": m["dice"], "mae": m["mae"], "dice_per_class": m["dice_per_class"]}
