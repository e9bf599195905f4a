"""The unlearning strategy interface and the loop that runs one strategy through a list of horizons.

Cost is counted in one currency, the optimiser step. ``retrain`` (the reference) trains a fresh model in full passes
over the retain subjects, so horizon ``h`` is ``h`` epochs = ``h · steps_per_epoch`` steps. Every other strategy
starts from the trained model and, at horizon ``h``, may take at most ``budget · h · steps_per_epoch`` steps
(``--budget``, default 0.1). Its batches are *sampled* (retain patches at random, forget patches for strategies that
use them at the strategy's ``forget_share``), never a full pass over retain + forget, and an optional
:class:`~unlearnable.forget.calibrate.CalibratedStop` ends it early.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from ..errors import UserError
from ..registry import Registry
from ..runtime import checkpoint as CK
from ..runtime.distributed import barrier, is_main, per_rank_batch, rank, unwrap, wrap
from ..runtime.loop import EpochLoop
from ..segment.train import PatchData, SegConfig, crop_patches, make_optimizer, seg_loss, train_epochs
from .calibrate import make_stop, scheduled

STRATEGIES: Registry[type[Strategy]] = Registry("forgetting strategy")
STOPS = ("auto", "none", "calibrated")
# A fresh Adam moves every weight by about ±lr on its first steps (m/√v = sign(g) until the moments fill), which at
# the rate a model was trained with knocks a trained model off its optimum: one such step cost retain Dice 0.83→0.71
# on the bench's phantoms. Unlearning steps therefore warm up over the first WARMUP steps.
WARMUP = 10


@dataclass
class ForgetTask:
    """What to forget: retain/forget volumes ``(N, C, D, H, W)`` uint8 with labels ``(N, D, H, W)``.

    ``held_*`` are the held-out (test) subjects, used by the calibrated stop; ``budget`` is the share of
    ``retrain``'s steps an approximate strategy may take; ``stop`` is ``auto`` (the strategy's own choice), ``none``
    or ``calibrated``. ``model_dir``/``meta``/ids are for strategies that need the trained model's folder (SISA).
    """

    retain_images: torch.Tensor
    retain_labels: torch.Tensor
    forget_images: torch.Tensor
    forget_labels: torch.Tensor
    num_classes: int
    cfg: SegConfig
    device: str = "cpu"
    held_images: torch.Tensor | None = None
    held_labels: torch.Tensor | None = None
    budget: float = 0.1
    stop: str = "auto"
    retain_ids: tuple[str, ...] = ()
    forget_ids: tuple[str, ...] = ()
    model_dir: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def retain_only(self) -> PatchData:
        return PatchData(self.retain_images, self.retain_labels, torch.zeros(len(self.retain_images), dtype=torch.bool))

    def both(self, forget_labels: torch.Tensor | None = None) -> PatchData:
        """Retain subjects then forget subjects (flag True), optionally with replaced forget labels."""
        fl = self.forget_labels if forget_labels is None else forget_labels
        flags = torch.cat([torch.zeros(len(self.retain_images), dtype=torch.bool),
                           torch.ones(len(self.forget_images), dtype=torch.bool)])
        return PatchData(torch.cat([self.retain_images, self.forget_images]), torch.cat([self.retain_labels, fl]),
                         flags)

    def steps_per_epoch(self) -> int:
        """Optimiser steps of one ``retrain`` epoch (a full pass over the retain patches in global batches)."""
        return max(1, math.ceil(len(self.retain_images) * self.cfg.patches_per_subject / self.cfg.batch_size))

    def step_budget(self, horizon: int) -> int:
        """Most steps an approximate strategy may take by ``horizon`` (in retrain epochs)."""
        return max(1, math.ceil(self.budget * horizon * self.steps_per_epoch()))


class Strategy:
    """Base class: fine-tune the trained model on the retain subjects with the segmentation loss."""

    name: ClassVar[str] = "?"
    from_scratch: ClassVar[bool] = False
    default_stop: ClassVar[str] = "none"
    guarantee: ClassVar[str] = "approximate"

    def __init__(self) -> None:
        self.progress: dict[int, dict[str, Any]] = {}  # horizon -> {"steps", "stopped_at", ...}, filled by the run

    def prepare(self, model: nn.Module, task: ForgetTask) -> nn.Module:
        """Change the starting model in place (re-initialise, freeze, compute masks); default: nothing."""
        return model

    def data(self, task: ForgetTask) -> PatchData:
        return task.retain_only()

    def forget_share(self, task: ForgetTask) -> float:
        """Probability that a sampled patch comes from a forget subject (0: retain only)."""
        data = self.data(task)
        return float(data.forget.float().mean()) if len(data) else 0.0

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, forget: torch.Tensor) -> torch.Tensor:
        """logits ``(B, K, p, p, p)``, labels ``(B, p, p, p)``, forget ``(B,)`` bool → scalar."""
        return seg_loss(logits, labels)

    def step_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """One batch's loss; strategies that need more than the logits (a teacher) override this."""
        return self.loss(model(x), y, f)

    def after_backward(self, model: nn.Module) -> None:
        """Hook between ``backward`` and the optimiser step (SalUn masks gradients here)."""

    def run(self, trained: nn.Module, fresh: Callable[[], nn.Module], task: ForgetTask, horizons: list[int],
            on_horizon: HorizonFn, ckpt_dir: Path | None) -> bool:
        """Strategies with their own procedure (SISA) run it here and return True; default: use the shared loop."""
        return False


def reinitialise(modules: list[nn.Module], seed: int) -> None:
    """Draw fresh weights for every layer in ``modules`` (their own ``reset_parameters``), seeded."""
    torch.manual_seed(seed)
    for top in modules:
        for m in top.modules():
            if hasattr(m, "reset_parameters"):  # batch norm's also resets its running statistics
                m.reset_parameters()


HorizonFn = Callable[[int, nn.Module, float], None]


def sample_items(data: PatchData, step: int, batch: int, seed: int, forget_share: float) -> list[int]:
    """A batch of ``batch`` random sample indices (subject · batch + slot) for ``crop_patches``.

    Each slot is a forget subject with probability ``forget_share``, else a retain subject; the draw depends only
    on (seed, step, rank), so a resumed run draws the same batches.
    """
    rng = np.random.default_rng([seed, 7, step, rank()])
    forget_idx = torch.nonzero(data.forget).flatten().tolist()
    retain_idx = torch.nonzero(~data.forget).flatten().tolist()
    items = []
    for slot in range(batch):
        pool = forget_idx if forget_idx and (not retain_idx or rng.random() < forget_share) else retain_idx
        items.append(int(pool[int(rng.integers(len(pool)))]) * batch + slot)
    return items


def warmup_steps(total: int) -> int:
    """Steps over which the learning rate ramps up linearly: 10, or a quarter of a smaller budget."""
    return max(1, min(WARMUP, total // 4))


def train_steps(ddp: nn.Module, strategy: Strategy, data: PatchData, task: ForgetTask, start: int, stop: int,
                opt: torch.optim.Optimizer, share: float, check: Callable[[nn.Module, int], bool] | None,
                check_every: int | Callable[[int], bool], lr: float, warmup: int = 1) -> tuple[int, bool]:
    """Take optimiser steps ``start .. stop-1`` on sampled batches; returns (steps done, stopped early).

    The learning rate ramps linearly from ``lr / warmup`` to ``lr`` over the first ``warmup`` steps (a function of
    the step index only, so a resumed run steps alike).
    """
    batch = per_rank_batch(task.cfg.batch_size)
    ddp.train()
    for step in range(start, stop):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        items = sample_items(data, step, batch, task.cfg.seed, share)
        x, y, f = crop_patches(data, items, task.cfg.patch, task.cfg.seed, 1_000_000 + step, batch)
        loss = strategy.step_loss(ddp, x.to(task.device), y.to(task.device), f.to(task.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        strategy.after_backward(unwrap(ddp))
        opt.step()
        done = step + 1
        due = check_every(done) if callable(check_every) else scheduled(done, check_every)
        if check is not None and due and check(unwrap(ddp), done):
            ddp.train()
            return done, True
        ddp.train()
    return stop, False


def run_strategy(strategy: Strategy, trained: nn.Module, fresh: Callable[[], nn.Module], task: ForgetTask,
                 horizons: list[int], on_horizon: HorizonFn, ckpt_dir: Path | None = None) -> None:
    """Run ``strategy`` up to each horizon in ``horizons`` (sorted, in retrain epochs) in one go.

    ``on_horizon(h, model, time_s)`` is called at every horizon with the unwrapped model and the cumulative
    training wall time (evaluation excluded, the calibrated stop's checks included); ``strategy.progress[h]`` holds
    the steps taken by then and ``cpu_s``, the process CPU time over the same span (on shared cores wall time
    follows the other jobs' load, CPU time much less). With ``ckpt_dir`` the run goes through the one epoch loop
    (:class:`~unlearnable.runtime.loop.EpochLoop`, one unit per horizon, checkpoint ``<strategy>.pt``) and a later
    call resumes after the last finished horizon.
    """
    if strategy.run(trained, fresh, task, horizons, on_horizon, ckpt_dir):
        return
    model = fresh() if strategy.from_scratch else copy.deepcopy(unwrap(trained))
    model = strategy.prepare(model.to(task.device), task)
    lr = task.cfg.lr
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], lr)
    data = strategy.data(task)
    share = strategy.forget_share(task)
    ddp = wrap(model)
    warmup = warmup_steps(task.step_budget(horizons[-1]))
    stop_rule = None if strategy.from_scratch else make_stop(strategy, task, task.step_budget(horizons[-1]), warmup)
    spe = task.steps_per_epoch()
    # The one epoch loop (runtime/loop.py), one unit per horizon. Each horizon's weights and progress (steps, times,
    # stop, stop log) ride in the checkpoint, so a resumed run hands the finished horizons to ``on_horizon`` again
    # (their output folders are rebuilt on every run) and continues from where the last one left off.
    loop = EpochLoop(ckpt_dir / f"{strategy.name}.pt" if ckpt_dir else None, unwrap(ddp), opt,
                     settings={"strategy": strategy.name, "horizons": list(horizons), "budget": task.budget,
                               "stop": task.stop, "lr": lr}, settings_key="forget", seed=task.cfg.seed,
                     writer=is_main(), map_location=task.device, refusal="rerun without --resume")
    state = loop.resume()
    kept: dict[int, dict[str, torch.Tensor]] = state.get("horizon_models", {})
    progress: dict[int, dict[str, Any]] = state.get("horizon_progress", {})
    done = state.get("epoch", 0)
    last = progress[horizons[done - 1]] if done else {}  # where the last finished horizon left the run
    start, elapsed, cpu = last.get("steps", 0), last.get("time_s", 0.0), last.get("cpu_s", 0.0)
    stopped_at = last.get("stopped_at")
    if stop_rule is not None:
        stop_rule.log[:] = last.get("stop_log", [])
        if not stop_rule.log:  # the starting model's losses, timed like every check (a resumed run has them)
            t0, c0 = time.perf_counter(), time.process_time()
            stop_rule.begin(unwrap(ddp))
            elapsed, cpu = elapsed + time.perf_counter() - t0, cpu + time.process_time() - c0
    if done:
        rng = CK.rng_state()  # replaying the finished horizons' evaluations must not shift what the next one draws
        for h in horizons[:done]:
            replay = copy.deepcopy(unwrap(ddp))
            replay.load_state_dict(kept[h])
            strategy.progress[h] = progress[h]
            on_horizon(h, replay, progress[h]["time_s"])
        CK.restore_rng(rng)
    for i in loop.epochs(done, len(horizons), extra=lambda: {"horizon_models": kept, "horizon_progress": progress}):
        h = horizons[i]
        target = h * spe if strategy.from_scratch else task.step_budget(h)
        t0, c0 = time.perf_counter(), time.process_time()
        if strategy.from_scratch:
            train_epochs(ddp, data, task.cfg, start // spe, h, opt, strategy.loss, task.device,
                         desc=f"{strategy.name} →{h}")
            start = target
        elif stopped_at is None and start < target:
            check = stop_rule.check if stop_rule is not None else None
            every = stop_rule.due if stop_rule is not None else 1
            start, stopped = train_steps(ddp, strategy, data, task, start, target, opt, share, check, every,
                                         lr, warmup)
            stopped_at = start if stopped else None
        elapsed += time.perf_counter() - t0
        cpu += time.process_time() - c0
        progress[h] = {"steps": start, "stopped_at": stopped_at, "budget_steps": target, "cpu_s": cpu,
                       "time_s": elapsed, "stop": stop_rule.name if stop_rule is not None else "none",
                       "stop_log": list(stop_rule.log) if stop_rule is not None else []}
        kept[h] = {k: v.detach().cpu().clone() for k, v in unwrap(ddp).state_dict().items()}
        strategy.progress[h] = progress[h]
        # evaluated inside the unit: the checkpoint written when it ends holds the RNG as the next horizon finds it
        on_horizon(h, unwrap(ddp), elapsed)
        barrier()


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
