"""SISA training (Bourtoule et al., "Machine unlearning", IEEE S&P 2021): S sub-models on disjoint subject shards,
each trained slice by slice with a checkpoint after every slice, predicting as an ensemble.

Layout inside a model folder (beside ``model.pt`` / ``model.json``)::

    shards/<k>/slice-<r>.pt    shard k's state after training on slices 0..r (runtime/checkpoint.py format):
                               {"model", "optimizer", "slice", "seen": the subject ids it has trained on, "rng"}

``model.json["sisa"]`` holds the plan: ``{"shards": S, "slices": R, "epochs_per_slice": e, "plan": [[ids of slice
r for r < R] for k < S]}``. Forgetting a subject retrains only its shard, from the checkpoint of the last slice
before the subject was added (``forget --strategy sisa``, forget/sisa.py).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import UserError
from ..models.seg3d import ShardEnsemble, build_seg_model
from ..runtime import checkpoint as CK
from ..runtime.distributed import barrier, is_main, per_rank_batch
from .train import PatchData, SegConfig, make_optimizer, train_epochs

__all__ = ["ShardEnsemble", "load_slice", "shard_plan", "slice_path", "train_shard", "train_sisa"]


def shard_plan(ids: Sequence[str], shards: int, slices: int, seed: int) -> list[list[list[str]]]:
    """Disjoint shards, each cut into ``slices`` slices: ids ranked by SHA-256 of ``seed:id`` and dealt round-robin
    (so the plan does not depend on file order)."""
    if shards < 1 or slices < 1:
        raise UserError(f"--shards {shards} / --slices {slices}: must be at least 1")
    if len(ids) < shards * slices:
        raise UserError(f"--shards {shards} × --slices {slices}: needs at least {shards * slices} training subjects, "
                        f"got {len(ids)}")
    ranked = sorted(ids, key=lambda s: hashlib.sha256(f"sisa:{seed}:{s}".encode()).hexdigest())
    per_shard = [ranked[k::shards] for k in range(shards)]
    return [[list(sh[r::slices]) for r in range(slices)] for sh in per_shard]


def slice_path(folder: Path, shard: int, r: int) -> Path:
    return folder / "shards" / str(shard) / f"slice-{r}.pt"


def member_seed(cfg: SegConfig, shard: int) -> int:
    return cfg.seed + 1000 * (shard + 1)


def train_shard(shard: int, plan: list[list[str]], first: int, images: dict[str, torch.Tensor],
                labels: dict[str, torch.Tensor], arch: dict[str, Any], cfg: SegConfig, epochs_per_slice: int,
                device: str, folder: Path | None, start: dict[str, Any] | None = None) -> tuple[nn.Module, int]:
    """Train shard ``shard`` through slices ``first..R-1`` of ``plan`` (ids per slice), from ``start`` (a slice
    checkpoint) or from scratch; saves each slice's checkpoint under ``folder``. Returns (model, steps)."""
    torch.manual_seed(member_seed(cfg, shard))
    model = build_seg_model(arch["name"], arch["in_channels"], arch["num_classes"], arch["width"]).to(device)
    opt = make_optimizer(model.parameters(), cfg.lr)
    seen: list[str] = []
    if start is not None:
        model.load_state_dict(start["model"])
        opt.load_state_dict(start["optimizer"])
        seen = list(start["seen"])
        CK.restore_rng(start["rng"])
    steps = 0
    for r in range(first, len(plan)):
        seen = seen + [i for i in plan[r] if i not in seen]
        data = PatchData(torch.stack([images[i] for i in seen]), torch.stack([labels[i] for i in seen]),
                         torch.zeros(len(seen), dtype=torch.bool))
        # epochs continue across slices (sampler seeds differ per epoch), as one run that grows its data
        train_epochs(model, data, cfg, r * epochs_per_slice, (r + 1) * epochs_per_slice, opt, device=device,
                     desc=f"shard {shard} slice {r}")
        steps += epochs_per_slice * math.ceil(len(seen) * cfg.patches_per_subject / per_rank_batch(cfg.batch_size))
        if folder is not None and is_main():
            CK.save(slice_path(folder, shard, r), {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                   "slice": r, "seen": list(seen), "rng": CK.rng_state()})
    barrier()
    return model, steps


def train_sisa(images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], num_classes: int, cfg: SegConfig,
               shards: int, slices: int, device: str, folder: Path) -> tuple[ShardEnsemble, dict[str, Any]]:
    """Train ``shards`` members on disjoint subject shards, writing slice checkpoints under ``folder``.

    Each member sees ``ceil(cfg.epochs / slices)`` epochs per slice, so a member's last slice has had about
    ``cfg.epochs`` epochs of training in all. Returns the ensemble and the ``sisa`` plan + summary for model.json.
    """
    plan = shard_plan(ids, shards, slices, cfg.seed)
    eps = max(1, math.ceil(cfg.epochs / slices))
    arch = {"name": cfg.model, "width": cfg.width, "in_channels": int(images.shape[1]), "num_classes": num_classes}
    by_id_img = {i: images[n] for n, i in enumerate(ids)}
    by_id_lab = {i: labels[n] for n, i in enumerate(ids)}
    t0, members, steps = time.perf_counter(), [], 0
    for k in range(shards):
        m, s = train_shard(k, plan[k], 0, by_id_img, by_id_lab, arch, cfg, eps, device, folder)
        members.append(m)
        steps += s
    info = {"shards": shards, "slices": slices, "epochs_per_slice": eps, "plan": plan}
    return ShardEnsemble(members).eval(), {"sisa": info, "time_s": time.perf_counter() - t0, "steps": steps}


def load_slice(folder: Path, shard: int, r: int, device: str) -> dict[str, Any]:
    state = CK.load(slice_path(folder, shard, r), map_location=device)
    if state is None:
        raise UserError(f"{slice_path(folder, shard, r)}: missing SISA slice checkpoint; the model folder is "
                        "incomplete (re-run 'segment train --shards')")
    return state
