"""Shared pieces of the model-based protections (EM, BEO): surrogates, norm-ball steps, quantised tables.

A gradient method optimises a float perturbation ``delta`` in [0, 1] units and hands back integer grey-level
steps (:class:`~unlearnable.protect.noise.NoiseTable`); :func:`apply_table` adds them to the uint8 images. The
quantisation keeps the budget: L-inf steps are rounded and clipped to ``floor(255 * eps)`` levels, L2 steps are
truncated towards zero, which can only shrink every coordinate and therefore the norm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.imageset import ImageSet
from ..errors import UserError
from ..models import MODELS, Classifier, build_model
from ..perturbation import NoiseTable, per_sample_norm, project, step  # noqa: F401  (step: used by the methods)
from ..registry import look_up_option
from ..runtime import distributed as D
from ..runtime import precision as P
from .base import eps_levels
from .keys import Key

NORMS = ("linf", "l2")
T = TypeVar("T")


def check_budget(eps: float, norm: str, step_size: float = 0.0) -> None:
    """Validate the ``eps``/``norm``/``step_size`` parameters shared by the gradient methods."""
    look_up_option(norm, NORMS, "--param norm")
    if not eps > 0 or (norm == "linf" and eps > 1):
        raise UserError(f"--param eps={eps}: must be positive (and at most 1 for linf), e.g. 8/255")
    if step_size < 0:
        raise UserError(f"--param step_size={step_size}: must be >= 0 (0 picks a default from eps)")


def check_positive(**values: float) -> None:
    for name, v in values.items():
        if v <= 0:
            raise UserError(f"--param {name}={v}: must be positive")


# -- norm balls ------------------------------------------------------------------------------------------------
def random_start(shape: tuple[int, ...], eps: float, norm: str, g: torch.Generator) -> torch.Tensor:
    """A key-derived random start inside the ball: uniform in the L-inf cube, or a scaled Gaussian direction."""
    if norm == "linf":
        return (torch.rand(shape, generator=g) * 2 - 1) * eps
    d = torch.randn(shape, generator=g)
    return project(d * eps / 2 / per_sample_norm(d), eps, norm)


def default_step(eps: float, norm: str, steps: int, step_size: float) -> float:
    """``step_size`` if given, else enough to cross the ball about 2.5 times in ``steps`` steps (Madry et al.)."""
    return step_size if step_size > 0 else 2.5 * eps / max(1, steps)


# -- quantised perturbation tables ----------------------------------------------------------------------------
def quantise(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Float perturbation ``(R, C, H, W)`` -> int16 grey-level steps that still satisfy the budget."""
    if norm == "linf":
        k = eps_levels(eps)
        return delta.mul(255.0).round().clamp_(-k, k).to(torch.int16)
    return delta.mul(255.0).trunc().to(torch.int16)  # |trunc(v)| <= |v| per pixel, so the L2 norm cannot grow


def make_table(delta: torch.Tensor, eps: float, norm: str, mode: str, data: ImageSet) -> NoiseTable:
    """Wrap a fitted perturbation (per class or per sample) as a table :func:`apply_table` can use."""
    return NoiseTable(quantise(delta.detach().cpu(), eps, norm), mode, data.ids if mode == "samplewise" else ())


def table_rows(data: ImageSet, table: NoiseTable) -> torch.Tensor:
    """Row of ``table`` for each sample: its class (class-wise) or its position among the fitted ids."""
    if table.mode == "classwise":
        if int(data.labels.max()) >= table.steps.shape[0]:
            raise UserError(f"labels: class {int(data.labels.max())} has no perturbation "
                            f"({table.steps.shape[0]} fitted)")
        return data.labels
    pos = {i: r for r, i in enumerate(table.ids)}
    missing = [i for i in data.ids if i not in pos]
    if missing:
        raise UserError(f"sample '{missing[0]}' was not in the data the perturbation was fitted on")
    return torch.tensor([pos[i] for i in data.ids], dtype=torch.long)


def apply_table(data: ImageSet, table: NoiseTable) -> torch.Tensor:
    """Pure: add the table's grey-level steps to the uint8 images ``(N, C, H, W)`` and clip to [0, 255]."""
    steps = table.steps[table_rows(data, table)].to(torch.int16)
    return (data.images.to(torch.int16) + steps).clamp_(0, 255).to(torch.uint8)


# -- surrogate models -----------------------------------------------------------------------------------------
def make_surrogate(name: str, data: ImageSet, key: Key, purpose: str, device: str) -> Classifier:
    """A freshly initialised surrogate; its weights come from the key (global RNG state is left untouched)."""
    MODELS.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(key.seed(purpose))
        model = build_model(name, data.channels, data.num_classes, data.size[0])
    return P.prepare(model, device, P.Accel())


def index_batches(n: int, batch_size: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled mini-batches of indices (a fresh key-derived permutation each epoch)."""
    while True:
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            yield perm[s:s + batch_size]


class SurrogateTrainer:
    """SGD on a surrogate, one mini-batch at a time, batches drawn from a key-derived stream."""

    def __init__(self, model: nn.Module, n: int, batch_size: int, lr: float, g: torch.Generator,
                 device: str = "cpu", precision: str = "fp32") -> None:
        self.model = model
        self.device, self.precision = device, precision
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.stepper = P.Stepper(self.opt, device, precision)
        self.stream = index_batches(n, batch_size, g)

    def train(self, x: torch.Tensor, y: torch.Tensor, steps: int, delta: torch.Tensor | None = None,
              row_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
              transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
              adversary: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        """``steps`` SGD steps on ``x`` ``(N, C, H, W)``, labels ``y`` ``(N,)``, perturbed by ``delta`` if given.

        ``delta`` has one row per sample, or per ``row_of(idx)`` (e.g. the labels, for class-wise noise);
        ``transform`` (e.g. a keyed crop/flip) is applied to each perturbed batch, as a victim's augmentation is;
        ``adversary(model, batch, labels)`` (e.g. :func:`linf_ascent`) replaces the batch by adversarial examples
        before the step: adversarial training of the surrogate.
        """
        self.model.train()
        for _ in range(steps):
            idx = next(self.stream).to(x.device)
            xb = x[idx]
            if delta is not None:
                xb = (xb + delta[row_of(idx) if row_of is not None else idx]).clamp(0.0, 1.0)
            if transform is not None:
                xb = transform(xb)
            if adversary is not None:
                with bn_mode(self.model, "batch"):  # the attack's forward passes leave running statistics alone
                    xb = adversary(self.model, xb, y[idx])
            with P.autocast(self.device, self.precision):
                loss = F.cross_entropy(self.model(xb).float(), y[idx])
            self.stepper.step(loss)
        self.model.eval()


def linf_ascent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: float, steps: int,
                precision: str = "fp32") -> torch.Tensor:
    """Adversarial examples of ``x`` ``(B, C, H, W)`` in [0, 1]: ``steps`` of signed gradient *ascent* on the
    cross-entropy from zero (no random start, so every rank computes the same result), step ``2.5 * radius /
    steps``, kept within ``radius`` in L-inf and inside [0, 1]. Differentiable in ``x`` (the perturbation found is
    a constant): the gradient of the loss at the returned batch flows back to ``x``, as robust EM needs."""
    if radius <= 0:
        return x
    alpha = 2.5 * radius / steps
    base = x.detach()
    rho = torch.zeros_like(base)
    for _ in range(steps):
        r = rho.clone().requires_grad_(True)
        with P.autocast(base.device, precision):
            loss = F.cross_entropy(model(base + r).float(), y)
        grad = P.input_grad(loss, r, precision)
        rho = (rho + alpha * grad.sign()).clamp(-radius, radius)
        rho = (base + rho).clamp(0.0, 1.0) - base
    return x + rho


@contextmanager
def bn_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """``eval``: the model as it is (eval mode, running statistics). ``batch``: batch-norm layers normalise with the
    statistics of the current batch, as in training, but their running statistics are left untouched."""
    if mode == "eval":
        yield
        return
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
        m.train()
    try:
        yield
    finally:
        for m, (mom, tr) in zip(bns, saved, strict=True):
            m.momentum = mom
            m.train(tr)


# -- sharding over ranks ---------------------------------------------------------------------------------------
def my_batches(batches: list[T]) -> list[T]:
    """This rank's share of a list of index batches (or batch numbers) that every rank drew identically
    (round-robin).

    The gradient methods update each sample's noise from its own batch alone (the surrogate is frozen during the
    noise pass), so a batch gives the same result on whichever rank runs it: sharding whole batches keeps the
    output identical to one process, batch-norm batch statistics included.
    """
    return batches[D.rank()::D.world_size()]


def gather_batches(delta: torch.Tensor, batches: list[torch.Tensor]) -> torch.Tensor:
    """After each rank updated the rows of its :func:`my_batches`, give every rank all rows (copied, not summed)."""
    w = D.world_size()
    owned = [torch.cat(batches[r::w]).cpu() if batches[r::w] else torch.zeros(0, dtype=torch.long) for r in range(w)]
    return D.gather_rows(delta, owned)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))
