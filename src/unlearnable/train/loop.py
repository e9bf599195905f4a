"""The victim training loop: seeded SGD on in-memory uint8 images, data-parallel when launched by torchrun.

``batch_size`` is the *global* batch; each rank takes ``batch_size / world`` samples per step from a
``DistributedSampler`` (``set_epoch`` every epoch). The learning rate is given for ``base_batch`` and scaled by
``lr_scaling`` (linear: Goyal et al. 2017; sqrt: Krizhevsky 2014), with optional linear warm-up. Evaluation is
sharded without padding and the correct/total counts are all-reduced, so every sample counts exactly once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..log import Progress
from ..models import build_model
from ..registry import look_up_option
from ..runtime import distributed as D
from ..runtime import precision as P
from ..runtime import schedule
from ..runtime.loop import EpochLoop

# A batch hook sees float images in [0, 1] and targets, and may return new ones (targets may become soft,
# (B, K) probabilities, e.g. mixup). It also gets the model, for adversarial training.
BatchHook = Callable[[torch.Tensor, torch.Tensor, nn.Module], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Recipe:
    """How a victim is trained. ``batch_size`` is global; ``lr`` is for ``base_batch`` samples per step."""

    model: str = "resnet18"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    base_batch: int = 128
    lr_scaling: str = "none"  # none | linear | sqrt
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | constant
    seed: int = 0
    eval_batch_size: int = 512
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; a grad scaler for fp16)
    sync_bn: bool = False  # SyncBatchNorm over ranks (GPUs, world size > 1)
    compile: bool = False  # torch.compile the victim

    def validate(self) -> None:
        self.accel().validate()
        look_up_option(self.lr_scaling, schedule.RULES, "--lr-scaling")
        look_up_option(self.schedule, schedule.SCHEDULES, "--schedule")
        if self.epochs < 1:
            raise UserError(f"--epochs {self.epochs}: must be at least 1")
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.lr <= 0:
            raise UserError(f"--lr {self.lr}: must be positive")

    def accel(self) -> P.Accel:
        return P.Accel(self.precision, self.compile, self.sync_bn)

    def scaled_lr(self) -> float:
        return schedule.scaled_lr(self.lr, self.batch_size, self.base_batch, self.lr_scaling)


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    # the final model's confusion matrix on each eval set (row = true class), from the last epoch's evaluation
    eval_confusion: dict[str, list[list[int]]] = field(default_factory=dict)
    test_confusion: list[list[int]] | None = None  # the final model on the test split (audit.train_and_test)


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine (or constant) over the remaining steps."""
    return schedule.lr_at(recipe.scaled_lr(), step, steps_per_epoch, recipe.epochs, recipe.warmup_epochs,
                          recipe.schedule)


@torch.no_grad()
def _predictions(model: nn.Module, images: torch.Tensor, device: str, batch_size: int,
                 precision: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(indices, top-1 predictions)`` of this rank's share of uint8 ``images``, batch by batch, in eval mode."""
    m = D.unwrap(model)
    was_training = m.training
    m.eval()
    try:
        for idx in D.batches(D.shard_indices(len(images)), batch_size):
            x = P.to_device(images[idx], device, P.use_channels_last(m, device)).float().div_(255.0)
            with P.autocast(device, precision):
                yield idx, m(x).argmax(1).cpu()
    finally:
        m.train(was_training)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: str,
             batch_size: int = 512, precision: str = "fp32") -> float:
    """Top-1 accuracy on uint8 ``(N, C, H, W)`` images, sharded over ranks without padding."""
    correct = total = 0
    for idx, pred in _predictions(model, images, device, batch_size, precision):
        correct += int((pred == labels[idx]).sum())
        total += len(idx)
    counts = D.all_reduce_sum(torch.tensor([correct, total]))
    return float(counts[0] / counts[1]) if counts[1] > 0 else float("nan")


def confusion(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, device: str,
              batch_size: int = 512, precision: str = "fp32") -> torch.Tensor:
    """``(K, K)`` int64 counts, row = true class, column = predicted class, summed over ranks."""
    cm = torch.zeros(num_classes * num_classes, dtype=torch.long)
    for idx, pred in _predictions(model, images, device, batch_size, precision):
        cm += torch.bincount(labels[idx] * num_classes + pred, minlength=num_classes * num_classes)
    return D.all_reduce_sum(cm).round().long().reshape(num_classes, num_classes)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    recipe: Recipe,
    device: str = "cpu",
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    hooks: Sequence[BatchHook] = (),
    model: nn.Module | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    desc: str = "training",
) -> tuple[nn.Module, History]:
    """Train a victim on uint8 ``images`` ``(N, C, H, W)`` and ``labels`` ``(N,)``.

    Args:
        eval_sets: named ``(images, labels)`` evaluated after every epoch (accuracy curves); after the last
            epoch the same pass also fills ``history.eval_confusion[name]``.
        hooks: batch transforms applied in order (defences such as mixup or adversarial training).
        model: start from this model (fine-tuning) instead of a fresh ``recipe.model``.
        checkpoint: a file updated after every epoch; if it exists, training resumes from it.
    Returns:
        The trained (unwrapped) model and its history.
    """
    recipe.validate()
    info = D.info()
    per_rank = D.per_rank_batch(recipe.batch_size)
    torch.manual_seed(recipe.seed)  # same init on every rank (DDP also broadcasts it)
    if model is None:
        model = build_model(recipe.model, images.shape[1], num_classes, int(images.shape[-1]))
    accel = recipe.accel()
    model = P.prepare(model, device, accel)
    net = D.wrap(model, recipe.sync_bn)
    model = D.unwrap(net)
    fwd = P.maybe_compile(net, accel)
    cl = P.use_channels_last(model, device)
    lr0 = recipe.scaled_lr()
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                          nesterov=recipe.momentum > 0)
    stepper = P.Stepper(opt, device, recipe.precision)
    sampler = D.train_sampler(len(labels), seed=recipe.seed, shuffle=True, drop_last=False)
    steps_per_epoch = math.ceil(len(sampler) / per_rank)
    hist = History(setup={"world_size": info.world_size, "global_batch_size": recipe.batch_size,
                          "per_rank_batch_size": per_rank, "lr_scaling": recipe.lr_scaling, "base_lr": recipe.lr,
                          "base_batch": recipe.base_batch, "scaled_lr": lr0, "warmup_epochs": recipe.warmup_epochs,
                          "steps_per_epoch": steps_per_epoch, "backend": info.backend, "device": device,
                          "launcher": info.launcher, "recipe": asdict(recipe),
                          "sync_bn": D.sync_bn_state(recipe.sync_bn)} | accel.record(device, model))
    loop = EpochLoop(checkpoint or None, model, opt, asdict(recipe), "recipe", recipe.seed, writer=D.is_main())
    state = loop.resume()  # hooks (mixup, augmentation) draw what they would have drawn
    if state:
        hist.epochs, hist.wall_s = state["history"], state["wall_s"]
    start_epoch = state.get("epoch", 0)
    bar = Progress(recipe.epochs, desc, "epoch", initial=start_epoch, enabled=progress)
    t0 = time.perf_counter() - hist.wall_s
    step = start_epoch * steps_per_epoch
    for epoch in loop.epochs(start_epoch, recipe.epochs, lambda: {"history": hist.epochs, "wall_s": hist.wall_s}):
        sampler.set_epoch(epoch)
        net.train()
        order = list(sampler)
        loss_sum = torch.zeros(3)  # loss*n, correct, n
        for b in D.batches(order, per_rank):
            x = P.to_device(images[b], device, cl).float().div_(255.0)
            y = P.to_device(labels[b], device)
            target: torch.Tensor = y
            for hook in hooks:
                x, target = hook(x, target, net)
            for g in opt.param_groups:
                g["lr"] = lr_at(recipe, step, steps_per_epoch)
            with P.autocast(device, recipe.precision):
                out = fwd(x)
                loss = F.cross_entropy(out.float(), target)
            stepper.step(loss)
            step += 1
            loss_sum += torch.tensor([float(loss.detach()) * len(b), float((out.argmax(1) == y).sum()), len(b)])
        tot = D.all_reduce_sum(loss_sum)
        row = {"epoch": epoch + 1, "train_loss": float(tot[0] / tot[2]), "train_acc": float(tot[1] / tot[2]),
               "lr": opt.param_groups[0]["lr"]}
        last = epoch + 1 == recipe.epochs
        for name, (xi, yi) in (eval_sets or {}).items():
            if last:  # one pass gives the final accuracy and the confusion matrix callers report
                cm = confusion(net, xi, yi, num_classes, device, recipe.eval_batch_size, recipe.precision)
                total = cm.sum()
                row[f"{name}_acc"] = float(cm.trace() / total) if total > 0 else float("nan")
                hist.eval_confusion[name] = cm.tolist()
            else:
                row[f"{name}_acc"] = accuracy(net, xi, yi, device, recipe.eval_batch_size, recipe.precision)
        row["wall_s"] = time.perf_counter() - t0
        hist.epochs.append(row)
        hist.wall_s = row["wall_s"]
        bar.update(1, line=True, **{k: v for k, v in row.items() if k.endswith("acc")})
    bar.close()
    D.barrier()
    return model, hist
