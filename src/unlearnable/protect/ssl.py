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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..log import log
from ..models.classifiers import Classifier
from ..models.pretrained import load_pretrained_file
from ..runtime import distributed as D
from ..runtime import precision as P
from ..runtime.loop import EpochLoop
from ..utils import sha256_file

PROJ_DIM = 64


def load_surrogate_weights(model: Classifier, path: str | os.PathLike, min_match: float = 0.9,
                           arch: str = "") -> dict[str, Any]:
    """Load a local weights file into ``model.features`` and prove that it went in.

    Accepts this package's classifiers and torchvision/timm checkpoints of ``arch`` (ResNet-18/50, MobileNetV2),
    plain or wrapped (``{"state_dict": ...}``, ``{"model": ...}``, ``module.`` prefixes); names are mapped
    explicitly by :mod:`unlearnable.models.pretrained`, which also adapts the stem and input to the checkpoint.

    Returns:
        ``{"file", "looks_like", "matched", "missing", "unexpected", "mismatched_shape", "head", "adapted"}``.
    Raises:
        UserError: unreadable file, or fewer than ``min_match`` of the feature tensors matched (the message names
        the architecture the file looks like).
    """
    report = load_pretrained_file(model, arch, path, min_match)
    log(f"surrogate weights {path} ({report['looks_like']}): {report['matched']} feature tensors loaded, "
        f"{report['missing']} missing, {report['unexpected']} unexpected, {report['mismatched_shape']} wrong shape, "
        f"{report['head']} head tensor(s) ignored" + "".join(f"; {a}" for a in report["adapted"]))
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
    accel: P.Accel | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``model`` (its head is the projection) with SimCLR on uint8 ``images`` ``(N, C, H, W)``, no labels.

    Runs on :class:`~unlearnable.runtime.loop.EpochLoop`: checkpointed every epoch to ``checkpoint`` (weights,
    optimizer, losses, global RNGs and every rank's augmentation generator); a run that finds the file resumes from
    it. ``on_epoch_end(epoch)`` runs after each checkpoint (1-based epoch).

    Returns:
        The mean loss per epoch; ``model`` is trained in place (on ``device``).
    """
    per_rank = D.per_rank_batch(batch_size)
    accel = accel or P.Accel()
    net = D.wrap(P.prepare(model, device, accel), accel.sync_bn)
    fwd = P.maybe_compile(net, accel)
    cl = P.use_channels_last(model, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    stepper = P.Stepper(opt, device, accel.precision)
    sampler = D.train_sampler(len(images), seed=seed, shuffle=True, drop_last=True)
    g = torch.Generator().manual_seed(seed + 7919 * D.rank())  # each rank its own augmentations
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    loop = EpochLoop(checkpoint, model, opt, settings, "ssl", seed, writer=D.is_main(),
                     refusal="delete it to redo this stage", generators={"augment": g})
    state = loop.resume()
    start, losses = state.get("epoch", 0), state.get("losses", [])
    if state:
        log(f"surrogate: resuming self-supervised training at epoch {start + 1}")
    bar = _bar(progress, epochs, start, "surrogate (SimCLR)")
    if bar is not None:
        loop.on_epoch_end.append(lambda _: bar.update(1, line=True, loss=losses[-1]))
    if on_epoch_end is not None:
        loop.on_epoch_end.append(on_epoch_end)
    for epoch in loop.epochs(start, epochs, lambda: {"losses": losses}):
        sampler.set_epoch(epoch)
        net.train()
        tot = torch.zeros(2)
        order = list(sampler)
        # Full batches only (drop_last); a set smaller than one batch is a single batch.
        for i in range(0, max(1, len(order) - per_rank + 1), per_rank):
            idx = order[i:i + per_rank]
            if len(idx) < 2:
                continue
            x = P.to_device(images[idx], device).float().div_(255.0)
            v1, v2 = random_views(x, g), random_views(x, g)
            if cl:
                v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
            with P.autocast(device, accel.precision):
                z1, z2 = fwd(v1), fwd(v2)
            loss = nt_xent(z1.float(), z2.float())  # the contrastive softmax in float32
            stepper.step(loss)
            tot += torch.tensor([float(loss.detach()) * len(idx), len(idx)])
        tot = D.all_reduce_sum(tot)
        losses.append(float(tot[0] / tot[1]) if tot[1] > 0 else math.nan)
    D.broadcast_buffers(model)  # every rank freezes rank 0's surrogate, the one a resumed run loads
    if bar is not None:
        bar.close()
    return losses


def _bar(progress: bool, total: int, initial: int, desc: str):
    """Epoch progress on rank 0 (see :class:`~unlearnable.log.Progress`); None when not reporting."""
    if not (progress and D.is_main()):
        return None
    from ..log import Progress

    return Progress(total, desc, "epoch", initial=initial)


# -- a frozen surrogate that can be rebuilt later (``protect --like``) --------------------------------------------
def surrogate_spec(model: Classifier, arch: str, build: dict[str, Any], weights_file: str = "") -> dict[str, Any]:
    """What rebuilds the frozen surrogate: its architecture and constructor arguments, plus either a reference to
    the user's weights file (path and SHA-256; public weights are not copied) or the learnt feature weights."""
    spec: dict[str, Any] = {"arch": arch, "build": dict(build)}
    if weights_file:
        spec["weights_file"] = str(Path(weights_file).resolve())
        spec["weights_sha256"] = sha256_file(weights_file)
    else:
        spec["features"] = {k: v.detach().cpu().clone() for k, v in model.features.state_dict().items()}
    return spec


def rebuild_surrogate(spec: dict[str, Any], device: str = "cpu") -> Classifier:
    """The frozen surrogate described by :func:`surrogate_spec`, in eval mode."""
    from ..models import MODELS

    model = MODELS.get(spec["arch"])(**spec["build"])
    if "weights_file" in spec:
        path = Path(spec["weights_file"])
        if not path.is_file() or sha256_file(path) != spec["weights_sha256"]:
            raise UserError(f"{path}: the surrogate weights file the clusters were fitted with is missing or has "
                            f"changed (SHA-256 {spec['weights_sha256'][:16]}...)")
        load_pretrained_file(model, spec["arch"], path)
    else:
        model.features.load_state_dict(spec["features"])
    model = model.to(device).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    return model
