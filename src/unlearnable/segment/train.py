"""Patch-based 3D segmentation training (DDP through ``runtime/distributed.py``) and the model folder format.

A model folder holds ``model.pt`` (architecture + weights) and ``model.json`` (classes, modalities, patch, the
subject ids it was trained on and held out, the training history). The unlearning strategies reuse
:func:`train_epochs` with their own data and loss.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..log import Progress
from ..models.seg3d import ShardEnsemble, build_seg_model
from ..runtime import precision as P
from ..runtime.distributed import (
    all_reduce_mean,
    batches,
    info,
    is_main,
    per_rank_batch,
    sync_bn_state,
    train_sampler,
    unwrap,
    wrap,
)
from ..runtime.loop import EpochLoop
from ..utils import sha256_file

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SegConfig:
    """Training settings. ``batch_size`` is global (split over ranks); an epoch visits every subject
    ``patches_per_subject`` times with a random ``patch``³ crop."""

    model: str = "resnet10"
    width: int = 8
    patch: int = 32
    epochs: int = 20
    batch_size: int = 2
    lr: float = 1e-3
    patches_per_subject: int = 2
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; a grad scaler for fp16)
    sync_bn: bool = False  # SyncBatchNorm over ranks (GPUs, world size > 1)


@dataclass
class PatchData:
    """What a training run samples from: ``images`` (N, C, D, H, W) uint8, ``labels`` (N, D, H, W) int64 and a
    per-subject ``forget`` flag (N,) bool that a strategy's loss may use."""

    images: torch.Tensor
    labels: torch.Tensor
    forget: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def crop_patches(data: PatchData, items: Sequence[int], patch: int, seed: int, epoch: int, per_subject: int,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crops for sample indices ``items`` (subject = item // per_subject).

    Offsets depend only on (seed, epoch, item), so a run is the same on 1 or N ranks. Volumes smaller than the patch
    are zero-padded. Returns x ``(B, C, p, p, p)`` float in [0, 1], y ``(B, p, p, p)`` int64, forget ``(B,)`` bool.
    """
    xs, ys, fs = [], [], []
    for k in items:
        s = k // per_subject
        x, y = data.images[s], data.labels[s]
        pad = [max(0, patch - d) for d in x.shape[1:]]
        if any(pad):
            spec = [v for p in reversed(pad) for v in (0, p)]
            x, y = F.pad(x, spec), F.pad(y, spec)
        rng = np.random.default_rng([seed, epoch, k])
        o = [int(rng.integers(0, d - patch + 1)) for d in x.shape[1:]]
        sl = tuple(slice(a, a + patch) for a in o)
        xs.append(x[(slice(None), *sl)])
        ys.append(y[sl])
        fs.append(bool(data.forget[s]))
    return torch.stack(xs).float().div_(255.0), torch.stack(ys).long(), torch.tensor(fs)


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice (MONAI DiceCELoss): logits ``(B, K, ...)``, labels ``(B, ...)``."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels[:, None])


def standard_loss(logits: torch.Tensor, labels: torch.Tensor, forget: torch.Tensor) -> torch.Tensor:
    return seg_loss(logits, labels)


def train_epochs(model: torch.nn.Module, data: PatchData, cfg: SegConfig, start: int, stop: int,
                 optimizer: torch.optim.Optimizer, loss_fn: LossFn = standard_loss, device: str = "cpu",
                 desc: str = "train") -> list[float]:
    """Run epochs ``start .. stop-1`` in place; returns the mean loss of each epoch (averaged over ranks).

    ``model`` may already be DDP-wrapped (see :func:`~unlearnable.runtime.distributed.wrap`).
    """
    n_items = len(data) * cfg.patches_per_subject
    per_rank = per_rank_batch(cfg.batch_size)
    sampler = train_sampler(n_items, seed=cfg.seed)
    history = []
    model.train()
    stepper = P.Stepper(optimizer, device, cfg.precision)
    bar = Progress((stop - start) * -(-len(sampler) // per_rank), desc, "batch")
    for epoch in range(start, stop):
        sampler.set_epoch(epoch)
        total, count = torch.zeros(()), 0
        for items in batches(list(sampler), per_rank):
            x, y, f = crop_patches(data, items, cfg.patch, cfg.seed, epoch, cfg.patches_per_subject)
            with P.autocast(device, cfg.precision):
                logits = model(P.to_device(x, device))
            loss = loss_fn(logits.float(), P.to_device(y, device), P.to_device(f, device))
            stepper.step(loss)
            total += loss.detach().cpu()
            count += 1
            bar.update(1, line=False)
        history.append(float(all_reduce_mean(total / max(count, 1))))
        bar.update(0, line=True, epoch=epoch + 1, loss=history[-1])
    bar.close()
    return history


def make_optimizer(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def train_segmenter(images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: SegConfig,
                    device: str = "cpu", pretrained: str | None = None,
                    ckpt_dir: Path | None = None, augment: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a segmenter from scratch (or MedicalNet weights) on ``images`` (N, C, D, H, W) / ``labels``.

    With ``ckpt_dir`` the state is saved after every epoch and an existing checkpoint there is resumed.
    ``augment`` wraps the model for training only (e.g. :class:`~unlearnable.segment.augment.Augment3d`).
    Returns the unwrapped model (on ``device``) and a summary dict (losses, key report, time).
    """
    torch.manual_seed(cfg.seed)
    model = build_seg_model(cfg.model, images.shape[1], num_classes, cfg.width)
    report = None
    if pretrained:
        from ..models.seg3d import load_pretrained

        report = load_pretrained(model, pretrained)
    model.to(device)
    opt = make_optimizer(model.parameters(), cfg.lr)
    data = PatchData(images, labels, torch.zeros(len(images), dtype=torch.bool))
    loop = EpochLoop(ckpt_dir / "last.pt" if ckpt_dir else None, model, opt, asdict(cfg), "config", cfg.seed,
                     writer=is_main(), map_location=device, refusal="rerun without --resume")
    state = loop.resume()
    start, history = state.get("epoch", 0), state.get("history", [])
    ddp = wrap(model if augment is None else augment(model), cfg.sync_bn)
    t0 = time.perf_counter()
    for epoch in loop.epochs(start, cfg.epochs, lambda h=history: {"history": h}):  # the list grows in place
        history.extend(train_epochs(ddp, data, cfg, epoch, epoch + 1, opt, device=device, desc=f"segment {cfg.model}"))
    return model, {"loss": history, "time_s": time.perf_counter() - t0, "pretrained": report,
                         "world_size": info().world_size, "per_rank_batch": per_rank_batch(cfg.batch_size),
                         "sync_bn": sync_bn_state(cfg.sync_bn)} | P.Accel(cfg.precision).record(device)


# ---------------------------------------------------------------------------------------------- model folders
def save_model(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> str:
    """Write ``model.pt`` + ``model.json`` into folder ``path``; returns the SHA-256 of ``model.pt``."""
    path.mkdir(parents=True, exist_ok=True)
    net = unwrap(model)
    arch = meta["arch"]
    torch.save({"arch": arch, "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}},
               path / "model.pt")
    digest = sha256_file(path / "model.pt")
    from ..utils import write_json

    write_json(path / "model.json", {**meta, "model_sha256": digest})
    return digest


def load_model(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Read a model folder written by :func:`save_model`: the model (eval mode, on ``device``) and its metadata."""
    path = Path(path)
    if not (path / "model.pt").is_file() or not (path / "model.json").is_file():
        raise UserError(f"{path}: not a model folder (expected model.pt and model.json; see 'segment train')")
    meta = json.loads((path / "model.json").read_text())
    ckpt = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    arch = ckpt["arch"]
    model = build_seg_model(arch["name"], arch["in_channels"], arch["num_classes"], arch["width"])
    if arch.get("shards"):  # a SISA ensemble (segment train --shards)
        model = ShardEnsemble([build_seg_model(arch["name"], arch["in_channels"], arch["num_classes"], arch["width"])
                               for _ in range(arch["shards"])])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), meta


def arch_of(cfg: SegConfig, in_channels: int, num_classes: int) -> dict[str, Any]:
    return {"name": cfg.model, "width": cfg.width, "in_channels": in_channels, "num_classes": num_classes}


def config_dict(cfg: SegConfig) -> dict[str, Any]:
    return asdict(cfg)
