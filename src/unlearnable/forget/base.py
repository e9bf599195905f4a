"""The unlearning strategy interface and the loop that runs one strategy through a list of epoch horizons.

A strategy decides four things: where it starts (the trained model, or a fresh one), how it changes the model before
training (re-initialise, freeze), what it trains on (:class:`~unlearnable.segment.train.PatchData` with a per-subject
forget flag) and with which loss. Everything else (patches, DDP, checkpoints per horizon, timing) is shared here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..errors import UserError
from ..registry import Registry
from ..runtime import checkpoint as CK
from ..runtime.distributed import barrier, is_main, unwrap, wrap
from ..segment.train import PatchData, SegConfig, make_optimizer, seg_loss, train_epochs

STRATEGIES: Registry[type[Strategy]] = Registry("forgetting strategy")


@dataclass
class ForgetTask:
    """What to forget: retain/forget volumes ``(N, C, D, H, W)`` uint8 with labels ``(N, D, H, W)``."""

    retain_images: torch.Tensor
    retain_labels: torch.Tensor
    forget_images: torch.Tensor
    forget_labels: torch.Tensor
    num_classes: int
    cfg: SegConfig
    device: str = "cpu"

    def retain_only(self) -> PatchData:
        return PatchData(self.retain_images, self.retain_labels, torch.zeros(len(self.retain_images), dtype=torch.bool))

    def both(self, forget_labels: torch.Tensor | None = None) -> PatchData:
        """Retain subjects then forget subjects (flag True), optionally with replaced forget labels."""
        fl = self.forget_labels if forget_labels is None else forget_labels
        flags = torch.cat([torch.zeros(len(self.retain_images), dtype=torch.bool),
                           torch.ones(len(self.forget_images), dtype=torch.bool)])
        return PatchData(torch.cat([self.retain_images, self.forget_images]), torch.cat([self.retain_labels, fl]),
                         flags)


class Strategy:
    """Base class: fine-tune the trained model on the retain subjects with the segmentation loss."""

    name: ClassVar[str] = "?"
    from_scratch: ClassVar[bool] = False

    def prepare(self, model: nn.Module, task: ForgetTask) -> nn.Module:
        """Change the starting model in place (re-initialise, freeze); default: nothing."""
        return model

    def data(self, task: ForgetTask) -> PatchData:
        return task.retain_only()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, forget: torch.Tensor) -> torch.Tensor:
        """logits ``(B, K, p, p, p)``, labels ``(B, p, p, p)``, forget ``(B,)`` bool → scalar."""
        return seg_loss(logits, labels)


def reinitialise(modules: list[nn.Module], seed: int) -> None:
    """Draw fresh weights for every layer in ``modules`` (their own ``reset_parameters``), seeded."""
    torch.manual_seed(seed)
    for top in modules:
        for m in top.modules():
            if hasattr(m, "reset_parameters"):  # batch norm's also resets its running statistics
                m.reset_parameters()


HorizonFn = Callable[[int, nn.Module, float], None]


def run_strategy(strategy: Strategy, trained: nn.Module, fresh: Callable[[], nn.Module], task: ForgetTask,
                 horizons: list[int], on_horizon: HorizonFn, ckpt_dir: Path | None = None) -> None:
    """Run ``strategy`` up to each horizon in ``horizons`` (sorted epochs) in one go.

    ``on_horizon(h, model, time_s)`` is called at every horizon with the unwrapped model and the cumulative
    training wall time (evaluation excluded). With ``ckpt_dir`` each horizon's state is saved there and a later call
    resumes after the last saved horizon.
    """
    model = fresh() if strategy.from_scratch else copy.deepcopy(unwrap(trained))
    model = strategy.prepare(model.to(task.device), task)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], task.cfg.lr)
    data = strategy.data(task)
    ddp = wrap(model)
    start, elapsed = 0, 0.0
    for h in horizons:
        ck = ckpt_dir / f"{strategy.name}-{h}.pt" if ckpt_dir else None
        state = CK.load(ck, map_location=task.device) if ck is not None else None
        if state is not None:
            unwrap(ddp).load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, elapsed = h, state["time_s"]
            CK.restore_rng(state["rng"])
            on_horizon(h, unwrap(ddp), elapsed)
            continue
        t0 = time.perf_counter()
        train_epochs(ddp, data, task.cfg, start, h, opt, strategy.loss, task.device, desc=f"{strategy.name} →{h}")
        elapsed += time.perf_counter() - t0
        start = h
        if ck is not None and is_main():
            CK.save(ck, {"model": unwrap(ddp).state_dict(), "optimizer": opt.state_dict(), "time_s": elapsed,
                         "rng": CK.rng_state(), "data": CK.data_order(h, 0, task.cfg.seed)})
        barrier()
        on_horizon(h, unwrap(ddp), elapsed)


def describe(strategy: type[Strategy]) -> str:
    """First line of the strategy's docstring."""
    return (strategy.__doc__ or "").strip().splitlines()[0] if strategy.__doc__ else strategy.name


def strategy_names(spec: str) -> list[str]:
    """``all`` → every registered strategy with ``retrain`` first; else a comma list, each looked up."""
    from ..registry import look_up_option

    parts = [look_up_option(p.strip(), [*STRATEGIES.names(), "all"], "strategy")
             for p in spec.split(",") if p.strip()]
    if not parts:
        raise UserError("--strategy: name at least one strategy (or 'all')")
    if "all" in parts:
        names = STRATEGIES.names()
        return ["retrain", *[n for n in names if n != "retrain"]] if "retrain" in names else names
    return list(dict.fromkeys(parts))


def strategy_info() -> dict[str, Any]:
    return {n: describe(STRATEGIES.get(n)) for n in STRATEGIES.names()}
