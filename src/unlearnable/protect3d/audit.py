"""``unlearnable audit-seg``: does a protected subjects dataset stop a 3D segmenter from learning?

The same recipe (:class:`~unlearnable.segment.train.SegConfig`) trains one segmenter on the protected training
subjects and one on the same subjects clean; both are scored (Dice, MAE; :func:`~unlearnable.forget.metrics.evaluate`)
on the held-out subjects, which ``protect`` left clean. With the ``aug`` defence both train under standard 3D
augmentation (:class:`~unlearnable.segment.augment.Augment3d`: flips, intensity shift, Gaussian smoothing). A
protection works when the protected-trained model scores far below the clean-trained one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..data.subjects import SubjectSet, load_subjects
from ..errors import UserError
from ..forget.metrics import evaluate, public
from ..log import log
from ..protect.run import MANIFEST
from ..registry import look_up_option
from ..segment.augment import Augment3d
from ..segment.infer import predict_labels
from ..segment.train import SegConfig, train_segmenter
from .cues import intensity_cues

DEFENSES = ("none", "aug")


def read_protected(path: Path, clean: str) -> tuple[dict[str, Any], SubjectSet, SubjectSet]:
    """The manifest, the protected subjects and the clean ones (same ids, same order, same label maps)."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise UserError(f"--protected {path}: no {MANIFEST} (expected the output of 'unlearnable protect SUBJECTS')")
    try:
        m = json.loads(mpath.read_text())
        data, splits = m["load"]["data"], m["splits"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{mpath}: not a subjects manifest ({type(e).__name__}: {e})") from None
    if m.get("kind") != "subjects":
        raise UserError(f"{mpath}: written for images, not 3D subjects; use 'unlearnable evaluate' for it")
    prot = load_subjects(str(path / data), pad=True)  # subjects of different shapes: padded, scored at their own
    cl = load_subjects(clean, pad=True)
    if set(prot.ids) != set(cl.ids) or set(splits) != set(cl.ids):
        raise UserError(f"--clean {clean}: subjects {sorted(set(cl.ids) ^ set(prot.ids))[:3]} are not in both "
                        f"datasets; pass the SUBJECTS that {path} was protected from")
    prot = prot.select(cl.ids)
    if not bool((prot.labels == cl.labels).all()):
        raise UserError(f"--protected {path}: label maps differ from --clean {clean}'s; protect never changes them")
    return m, prot.with_splits([splits[s] for s in cl.ids]), cl


def audit_seg(protected: Path, clean: str, cfg: SegConfig, defenses: Sequence[str] = ("none",),
              device: str = "cpu") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train on protected and on clean training subjects (per defence); score both on the clean held-out ones.

    Returns the results (JSON-ready) and the slices of the figure: ``image``/``protected`` (a training subject,
    protected), ``test_image``/``truth``/``pred_clean``/``pred_protected`` (a held-out subject), each ``(H, W)``.
    """
    for d in defenses:
        look_up_option(d, DEFENSES, "--defense")
    m, prot, cl = read_protected(Path(protected), clean)
    want = m.get("splits_protected", ["train"])
    train = [i for i, s in enumerate(prot.splits) if s in want]
    test = [i for i, s in enumerate(prot.splits) if s not in want]
    if not train or not test:
        raise UserError(f"--protected {protected}: needs protected training subjects and clean held-out subjects "
                        f"(found {len(train)} and {len(test)})")
    held = cl.subset(test)
    runs: dict[str, Any] = {}
    preds: dict[str, np.ndarray] = {}
    for d in defenses:
        aug = Augment3d if d == "aug" else None
        runs[d] = {}
        for name, data in (("clean", cl), ("protected", prot)):
            log(f"audit-seg: training {cfg.model} on {len(train)} {name} subjects (defence {d})")
            net, summary = train_segmenter(data.images[train], data.labels[train], cl.num_classes, cfg, device,
                                           augment=aug)
            runs[d][name] = {**_scores(net, held, cl.scored, cfg.patch, device),
                             "train_loss": summary["loss"][-1], "time_s": round(summary["time_s"], 2)}
            if d == defenses[0]:
                preds[name] = predict_labels(net, held.native(0)[0][None], cfg.patch, device)[0].numpy()
        c, p = runs[d]["clean"]["dice"], runs[d]["protected"]["dice"]
        runs[d]["dice_ratio"] = p / c if c else None  # <= 0.5: the protection halves the clean model's Dice
    # how much of the task a voxel's own intensity already gives away (protect3d/cues.py), beside the Dice table
    cues = intensity_cues(cl, train, held, m.get("linf_budget"), runs[defenses[0]]["clean"]["dice"])
    log(f"audit-seg: {cues['summary']}")
    results = {"protected": str(protected), "clean": str(clean), "method": m.get("method"),
               "params": m.get("params"), "eps": m.get("linf_budget"), "model": cfg.model,
               "config": asdict(cfg), "defenses": list(defenses), "train_ids": [cl.ids[i] for i in train],
               "test_ids": list(held.ids), "scored": list(cl.scored), "classes": list(cl.classes),
               "protection_psnr_db": m.get("metrics", {}).get("psnr_db_mean"),
               "protection_ssim": m.get("metrics", {}).get("ssim_mean"), "runs": runs, "intensity_cues": cues}
    return results, _figure_slices(prot, cl, train[0], held, preds)


def _scores(net: Any, held: SubjectSet, scored: Sequence[int], patch: int, device: str) -> dict[str, Any]:
    """Dice, MAE and per-class Dice on the held-out subjects, each at its own shape (padding never scored), as
    means over subjects like :func:`~unlearnable.forget.metrics.evaluate`."""
    if not held.meta.get("native_shapes"):
        return public(evaluate(net, held.images, held.labels, scored, patch, device))
    each = []
    for i in range(len(held)):
        image, labels = held.native(i)
        each.append(public(evaluate(net, image[None], labels[None], scored, patch, device)))
    n = len(each)
    return {"dice": sum(r["dice"] for r in each) / n, "mae": sum(r["mae"] for r in each) / n,
            "dice_per_class": [sum(col) / n for col in zip(*(r["dice_per_class"] for r in each), strict=True)]}


def _figure_slices(prot: SubjectSet, cl: SubjectSet, i: int, held: SubjectSet, preds: dict[str, np.ndarray],
                   ) -> dict[str, np.ndarray]:
    """The middle axial slice (last voxel axis) of training subject ``i`` and of the first held-out subject, each at
    its own shape."""
    image, protected = cl.native(i)[0], prot.native(i)[0]
    z = image.shape[-1] // 2
    test_image, truth = held.native(0)
    zt = truth.shape[-1] // 2
    return {"image": image[0, :, :, z].numpy(), "protected": protected[0, :, :, z].numpy(),
            "test_image": test_image[0, :, :, zt].numpy(), "truth": truth[:, :, zt].numpy(),
            "pred_clean": preds["clean"][:, :, zt], "pred_protected": preds["protected"][:, :, zt]}
