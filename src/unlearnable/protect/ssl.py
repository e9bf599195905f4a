"""Surrogate feature extractors for label-agnostic methods: load local weights, or learn them without labels.

Unlearnable Clusters needs a feature extractor but no labels (Zhang et al., CVPR 2023, Sec. 3.2 uses an
off-the-shelf model). With no weights file, we train the surrogate on the data itself with SimCLR's contrastive
objective (Chen et al., ICML 2020): two random views of each image must find each other among the batch
(NT-Xent, temperature 0.5). Views are random resized crops, flips and brightness/contrast jitter done with one
``affine_grid``/``grid_sample`` call on the whole batch, drawn from a seeded generator, so training is reproducible.
Under DDP each rank contrasts its own per-rank batch (local negatives) and gradients are averaged.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..log import log
from ..models.classifiers import Classifier
from ..runtime import checkpoint as CK
from ..runtime import distributed as D

PROJ_DIM = 64


def load_surrogate_weights(model: Classifier, path: str | os.PathLike, min_match: float = 0.9) -> dict[str, Any]:
    """Load a state dict into ``model.features`` and prove that it went in.

    Accepts a plain state dict, ``{"model": sd}`` or ``{"state_dict": sd}``, keys with or without ``module.`` /
    ``features.`` prefixes. Tensors whose name and shape match are loaded; the head is ignored.

    Returns:
        ``{"file", "matched", "missing", "unexpected", "mismatched_shape"}`` (counts of feature tensors).
    Raises:
        UserError: unreadable file, or fewer than ``min_match`` of the feature tensors matched.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--surrogate-weights {p}: no such file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad user file
        raise UserError(f"--surrogate-weights {p}: not a PyTorch weights file ({type(e).__name__})") from None
    for k in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"--surrogate-weights {p}: expected a state dict of tensors")
    want = model.features.state_dict()
    given: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        k = k.removeprefix("module.")
        if k.startswith("head."):
            continue
        given[k.removeprefix("features.")] = v
    matched = {k: v for k, v in given.items() if k in want and want[k].shape == v.shape}
    report = {"file": str(p), "matched": len(matched), "missing": len([k for k in want if k not in matched]),
              "unexpected": len([k for k in given if k not in want]),
              "mismatched_shape": len([k for k in given if k in want and want[k].shape != given[k].shape])}
    if len(matched) < min_match * len(want):
        raise UserError(f"--surrogate-weights {p}: only {len(matched)} of {len(want)} feature tensors match the "
                        f"architecture ({report['missing']} missing, {report['unexpected']} unexpected, "
                        f"{report['mismatched_shape']} wrong shape); is --surrogate the right architecture?")
    model.features.load_state_dict(matched, strict=False)
    log(f"surrogate weights {p}: {len(matched)}/{len(want)} feature tensors loaded, {report['missing']} missing, "
        f"{report['unexpected']} unexpected")
    return report


def random_views(x: torch.Tensor, g: torch.Generator, min_scale: float = 0.6) -> torch.Tensor:
    """One random view per image ``(B, C, H, W)`` -> ``(B, C, H, W)``: resized crop, flip, brightness/contrast."""
    b = x.shape[0]
    u = torch.rand(b, 6, generator=g).to(x.device)
    s = min_scale + (1 - min_scale) * u[:, 0]  # crop side as a fraction of the image
    flip = torch.where(u[:, 1] < 0.5, -1.0, 1.0)
    tx, ty = (1 - s) * (2 * u[:, 2] - 1), (1 - s) * (2 * u[:, 3] - 1)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s * flip, s, tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    bright, contrast = 0.8 + 0.4 * u[:, 4], 0.8 + 0.4 * u[:, 5]
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    return ((v - mean) * contrast[:, None, None, None] + mean * bright[:, None, None, None]).clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss for paired projections ``(B, P)``: each view must pick its partner among 2B-1."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def train_ssl_surrogate(
    model: Classifier,
    images: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str,
    checkpoint: Path | None = None,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` (its head is the projection) with SimCLR on uint8 ``images`` ``(N, C, H, W)``, no labels.

    Checkpointed every epoch to ``checkpoint``; a run that finds the file resumes from it.

    Returns:
        The mean loss per epoch; ``model`` is trained in place (on ``device``).
    """
    per_rank = D.per_rank_batch(batch_size)
    model = model.to(device)
    net = D.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sampler = D.train_sampler(len(images), seed=seed, shuffle=True, drop_last=True)
    g = torch.Generator().manual_seed(seed + 7919 * D.rank())  # each rank its own augmentations
    losses: list[float] = []
    start = 0
    st = CK.load(checkpoint) if checkpoint is not None else None
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        g.set_state(st["rng"][D.rank()] if D.rank() < len(st["rng"]) else st["rng"][0])
        start, losses = st["epoch"], st["losses"]
        CK.restore_rng(st["rng_global"])
        log(f"surrogate: resuming self-supervised training at epoch {start + 1}")
    bar = _bar(progress, epochs, start, "surrogate (SimCLR)")
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        net.train()
        tot = torch.zeros(2)
        order = list(sampler)
        # Full batches only (drop_last); a set smaller than one batch is a single batch.
        for i in range(0, max(1, len(order) - per_rank + 1), per_rank):
            idx = order[i:i + per_rank]
            if len(idx) < 2:
                continue
            x = images[idx].to(device).float().div_(255.0)
            loss = nt_xent(net(random_views(x, g)), net(random_views(x, g)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += torch.tensor([float(loss.detach()) * len(idx), len(idx)])
        tot = D.all_reduce_sum(tot)
        losses.append(float(tot[0] / tot[1]) if tot[1] > 0 else math.nan)
        if checkpoint is not None:
            states = _gather_rng(g)
            if D.is_main():
                CK.save(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                                     "losses": losses, "rng": states, "rng_global": CK.rng_state(),
                                     "data": CK.data_order(epoch + 1, 0, seed)})
        if bar is not None:
            bar.update(1, line=True, loss=losses[-1])
    if bar is not None:
        bar.close()
    return losses


def _gather_rng(g: torch.Generator) -> list[torch.Tensor]:
    """Every rank's generator state (rank order), so a resumed run draws the same augmentations."""
    state = g.get_state()
    return list(D.all_gather_tensor(state[None]).unbind(0))


def _bar(progress: bool, total: int, initial: int, desc: str):
    """Epoch progress on rank 0 (see :class:`~unlearnable.log.Progress`); None when not reporting."""
    if not (progress and D.is_main()):
        return None
    from ..log import Progress

    return Progress(total, desc, "epoch", initial=initial)
