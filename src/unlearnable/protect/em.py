"""EM: error-minimising noise (Huang, Ma, Erfani, Bailey & Wang, "Unlearnable Examples", ICLR 2021).

The min-min bi-level problem (paper Eq. 2)

    min_theta  E_(x, y) [ min_{||delta|| <= eps}  L(f_theta(x + delta), y) ]

is solved by alternation: ``train_steps`` SGD steps on the surrogate with the current noise, then
``pgd_steps`` steps of projected gradient *descent* on the noise of every sample (sample-wise, one ``delta`` per
image) or every class (class-wise, one ``delta`` per class, updated from the samples of that class). It stops
when the surrogate's accuracy on the perturbed training data exceeds ``stop_acc`` (paper: 99%) or after
``max_outer`` rounds (``min_rounds`` can forbid an early stop). The noise makes the data "too easy": a victim
minimises its loss through the noise and learns nothing that transfers to clean images.

Batch norm: the noise is optimised against the surrogate with *batch* statistics (``bn="batch"``), the function
that its SGD steps actually train; running statistics are not updated by the noise passes. With only a few SGD
steps per round the eval-mode network is a different, much worse function early on (chance accuracy after two
rounds on MNIST), and noise fitted to it barely transfers (docs/methods.md has the measurements).

Robust EM (``robust=r``; Fu, He, Liu, Shen & Tao, "Robust Unlearnable Examples", ICLR 2022) solves
``min_theta E[min_delta max_{||rho|| <= r} L(f_theta(x + delta + rho), y)]`` instead: the surrogate is trained on
adversarial examples of the perturbed data (radius ``r``, ``robust_steps`` signed ascent steps from zero) and every
noise descent step takes the gradient at the worst case within ``r``, so the noise stays a shortcut for a victim
that trains adversarially at up to that radius. ``r`` must be smaller than ``eps``: an adversary as strong as the
noise can cancel it.

Under torchrun the noise pass is sharded in both modes: every rank draws the same batches from the key, runs the
surrogate's SGD steps (identical on every rank) and handles only its round-robin share of the batches. Sample-wise,
each rank descends on the rows of its batches and the rows are gathered (copied, never summed). Class-wise, each
descent step sums the class-noise gradient over every batch (each rank its share, then an all-reduce), so all ranks
take the same step: a full-data projected descent of ``pgd_steps`` steps per round. With ``augment``, the crops of
batch ``b``, step ``s`` of round ``t`` come from a generator keyed by ``(t, b, s)``, so any rank reproduces them.
Two processes give the bytes of one (``tests/runtime/test_gpu_paths.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from ..errors import UserError
from ..log import log
from ..models import MODELS
from ..perturbation import random_crop_flip
from ..registry import look_up_option
from ..runtime import distributed as D
from ..runtime import precision as P
from . import _gradient as G
from .base import METHODS, Protection
from .keys import Key
from .noise import NoiseTable
from .tiles import PeriodicTiles, tile_noise

#: ``--param init`` of ``em`` and ``adv``: a random start, or the class tiles of ``tiles`` with the levels named
#: (``tiles``: ``levels=spread``, the start of every measured ``init=tiles`` row; ``tiles-colour``: the levels given
#: out by colour, the default of ``tiles`` since then)
INITS = {"random": None, "tiles": "spread", "tiles-colour": "colour"}


def tile_start(data: ImageSet, key: Key, eps: float, levels: str = "spread") -> torch.Tensor:
    """The float noise ``(N, C, H, W)`` that ``tiles --param levels=LEVELS`` at ``eps`` adds with the same key
    (before clipping): ``spread`` is the start that the measured ``em``/``adv`` ``init=tiles`` rows used
    (docs/benchmarks.md)."""
    tiles = PeriodicTiles(eps=eps, levels=levels)
    codes = tiles.fit(data, key)
    return tile_noise(codes.tiles, data.labels, data.ids, codes.seed, data.size) * eps


@METHODS.register("em")
class ErrorMinimisingNoise(Protection):
    """Error-minimising noise by min-min optimisation on a surrogate (sample-wise or class-wise)."""

    summary = "error-minimising noise, min-min optimisation on a surrogate (Huang et al., ICLR 2021)"
    #: tiny settings for the contract test
    test_params = {"max_outer": 1, "train_steps": 2, "pgd_steps": 2, "batch_size": 8}

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        norm: str = "linf"  # linf | l2
        mode: str = "samplewise"  # samplewise | classwise
        surrogate: str = "smallcnn"
        train_steps: int = 10  # M: surrogate SGD steps per round (paper: 10)
        pgd_steps: int = 20  # noise descent steps per round (paper: 20)
        step_size: float = 0.0  # 0 -> eps / 10 (paper: 0.8/255 at eps 8/255)
        max_outer: int = 10  # rounds at most
        stop_acc: float = 0.99  # stop once surrogate accuracy on perturbed data exceeds this (paper: 99%)
        min_rounds: int = 0  # ... but never before this many rounds (0: the paper's rule alone)
        bn: str = "batch"  # batch | eval: batch-norm statistics of the surrogate while the noise is optimised
        batch_size: int = 128
        lr: float = 0.1
        init: str = "random"  # random | tiles | tiles-colour: the class tiles of `tiles` as the start (INITS)
        augment: int = 0  # crop padding of the keyed crop/flip applied in both min steps (0: none)
        saturate: bool = False  # L-inf only: push every pixel's noise to +-eps along its sign after the descent
        robust: float = 0.0  # robust EM (Fu et al., ICLR 2022): L-inf radius of the inner maximisation (0: plain EM)
        robust_steps: int = 5  # ascent steps of that maximisation

        def validate(self) -> None:
            G.check_budget(self.eps, self.norm, self.step_size)
            MODELS.get(self.surrogate)  # unknown name -> "did you mean"
            look_up_option(self.mode, ("samplewise", "classwise"), "--param mode")
            look_up_option(self.bn, ("batch", "eval"), "--param bn")
            look_up_option(self.init, tuple(INITS), "--param init")
            if INITS[self.init] and self.mode != "samplewise":
                raise UserError(f"--param init={self.init}: needs mode=samplewise (each image has its own tile phase)")
            if self.saturate and self.norm != "linf":
                raise UserError("--param saturate=true: needs norm=linf")
            if self.robust < 0 or (self.robust > 0 and self.robust >= self.eps):
                raise UserError(f"--param robust={self.robust}: must be >= 0 and smaller than eps={self.eps} "
                                "(an adversary as strong as the noise cancels it), e.g. robust=4/255 at eps=8/255")
            if self.robust > 0 and self.norm != "linf":
                raise UserError("--param robust: needs norm=linf")
            if self.robust_steps < 1:
                raise UserError(f"--param robust_steps={self.robust_steps}: must be >= 1")
            if not 0 <= self.augment <= 16:
                raise UserError(f"--param augment={self.augment}: crop padding must be in 0..16 (0: none)")
            G.check_positive(train_steps=self.train_steps, pgd_steps=self.pgd_steps, max_outer=self.max_outer,
                             batch_size=self.batch_size, lr=self.lr)
            if self.min_rounds < 0:
                raise UserError(f"--param min_rounds={self.min_rounds}: must be >= 0")
            if not 0 < self.stop_acc <= 1:
                raise UserError(f"--param stop_acc={self.stop_acc}: must be in (0, 1]")

    def fit(self, data: ImageSet, key: Key) -> NoiseTable:
        p = self.params
        dev = self.device
        x, y = data.float().to(dev), data.labels.to(dev)
        rows = data.num_classes if p.mode == "classwise" else len(data)
        # Per-sample (N, C, H, W) or per-class (K, C, H, W) noise, random start inside the ball (sample-wise: also
        # inside [0, 1], so the part of the start that saturated pixels would clip is not carried along), or the
        # class tiles of `tiles` (init=tiles).
        if INITS[p.init]:
            delta = tile_start(data, key, p.eps, INITS[p.init]).to(dev)
        else:
            g = key.generator(f"em/{p.mode}/init")
            delta = G.random_start((rows, *x.shape[1:]), p.eps, p.norm, g).to(dev)
        if p.mode == "samplewise":
            delta = G.project(delta, p.eps, p.norm, x)
        model = G.make_surrogate(p.surrogate, data, key, "em/surrogate", dev)
        # The surrogate's steps are the same on every rank, so their crops come from one stream; the noise pass draws
        # its crops per (round, batch, step) instead (see _crops), so that a batch's crops do not depend on the rank.
        g_aug = key.generator("em/augment")
        train_tf = (lambda xb: random_crop_flip(xb, p.augment, True, g_aug)) if p.augment else None
        self._key = key
        # Robust EM: the surrogate is trained adversarially and the noise minimises the loss of the worst case within
        # `robust` of each perturbed (and cropped) image, so a victim's adversarial training at up to that radius
        # still finds the noise's shortcut.
        self._adversary = (lambda m, xb, yb: self._worst(m, xb, yb).detach()) if p.robust else None
        trainer = G.SurrogateTrainer(model, len(data), p.batch_size, p.lr, key.generator("em/batches"), dev,
                                     self.accel.precision)
        alpha = p.step_size if p.step_size > 0 else p.eps / 10  # the paper's 0.8/255 at 8/255
        row_of = (lambda idx: y[idx]) if p.mode == "classwise" else (lambda idx: idx.to(dev))
        g_order = key.generator("em/order")
        self.rounds = 0
        for outer in range(p.max_outer):
            trainer.train(x, y, p.train_steps, delta, row_of, train_tf, self._adversary)  # min over theta
            # bn="batch": descend against the network that is being trained (batch statistics), not its eval-mode
            # twin, whose running statistics lag far behind in the first rounds (10% accuracy: chance).
            # Shuffled batches, as in training: data sorted by class would otherwise give one-class batches, whose
            # batch statistics are nothing like the ones the surrogate is trained with.
            batches = list(torch.randperm(len(x), generator=g_order).to(dev).split(p.batch_size))
            mine = G.my_batches(list(range(len(batches))))  # numbers of this rank's batches (all in one process)
            with G.bn_mode(model, p.bn):
                if p.mode == "classwise":
                    delta = self._classwise_descent(model, x, y, delta, alpha, batches, mine, outer)
                else:
                    delta = self._samplewise_descent(model, x, y, delta, alpha, batches, mine, outer)
                    delta = G.gather_batches(delta, batches)
                correct = _correct(model, x, y, delta, row_of, [batches[b] for b in mine], dev,
                                   self.accel.precision)
            correct = int(D.all_reduce_sum(torch.tensor([correct]))[0])  # each rank counted its own batches
            acc = correct / max(1, len(x))
            self.rounds = outer + 1
            if self.progress:
                log(f"em round {outer + 1}: surrogate accuracy on perturbed data {acc:.3f}")
            if acc >= p.stop_acc and outer + 1 >= p.min_rounds:  # the paper's stopping rule
                break
        if p.saturate:  # spend the whole budget: the descent leaves most pixels well inside the cube
            delta = torch.sign(delta) * p.eps
            if p.mode == "samplewise":
                delta = G.project(delta, p.eps, p.norm, x)
        return G.make_table(delta, p.eps, p.norm, p.mode, data)

    def _samplewise_descent(self, model, x, y, delta, alpha, batches, mine, outer) -> torch.Tensor:
        """``pgd_steps`` of projected gradient descent on the rows ``(N, C, H, W)`` of batches ``mine``, batch after
        batch (model weights frozen; each row depends on its own batch only)."""
        p = self.params
        dev, prec = self.device, self.accel.precision
        delta = delta.clone()
        for b in mine:
            idx = batches[b]
            xb, yb = x[idx], y[idx]
            for s in range(p.pgd_steps):
                d = delta[idx].clone().requires_grad_(True)
                with P.autocast(dev, prec):
                    loss = F.cross_entropy(model(self._worst(model, self._view(xb + d, outer, b, s), yb)).float(), yb)
                grad = P.input_grad(loss, d, prec)
                delta[idx] = G.project(G.step(d.detach(), -grad, alpha, p.norm), p.eps, p.norm, xb)
        return delta

    def _classwise_descent(self, model, x, y, delta, alpha, batches, mine, outer) -> torch.Tensor:
        """``pgd_steps`` of projected gradient descent on the class noise ``(K, C, H, W)``. Each step's gradient is
        the sum over every batch of the gradient of its mean loss: this rank's batches in float64, then an
        all-reduce, so every rank takes the same step (float64 sums of float32 terms: the order does not show after
        the cast back to float32)."""
        p = self.params
        dev, prec = self.device, self.accel.precision
        for s in range(p.pgd_steps):
            grad = torch.zeros(delta.shape, dtype=torch.float64, device=dev)
            for b in mine:
                idx = batches[b]
                xb, yb = x[idx], y[idx]
                d = delta.clone().requires_grad_(True)  # class noise is shared: d[yb] sums over a class's samples
                with P.autocast(dev, prec):
                    loss = F.cross_entropy(model(self._worst(model, self._view(xb + d[yb], outer, b, s), yb)).float(),
                                           yb)
                grad += P.input_grad(loss, d, prec).double()
            grad = D.all_reduce_sum(grad).to(dev, torch.float32)
            delta = G.project(G.step(delta, -grad, alpha, p.norm), p.eps, p.norm)
        return delta

    def _view(self, x: torch.Tensor, outer: int, batch: int, step: int) -> torch.Tensor:
        """What the surrogate sees of a perturbed batch: clipped to [0, 1], then (``augment``) cropped and flipped
        by a generator keyed by (round, batch number, step), so any rank draws the same crops for that batch."""
        x = x.clamp(0, 1)
        if not self.params.augment:
            return x
        return random_crop_flip(x, self.params.augment, True, self._key.generator(f"em/augment/{outer}/{batch}/{step}"))

    def _worst(self, model, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Robust EM's inner maximisation: the batch moved within ``robust`` to raise the loss (a constant shift,
        so the gradient still reaches the noise); the batch itself when ``robust`` is 0."""
        p = self.params
        return G.linf_ascent(model, xb, yb, p.robust, p.robust_steps, self.accel.precision)

    def apply(self, data: ImageSet, perturbation: NoiseTable) -> torch.Tensor:
        return G.apply_table(data, perturbation)


@torch.no_grad()
def _correct(model, x, y, delta, row_of, batches, device: str, precision: str) -> int:
    """Perturbed samples of ``batches`` that the surrogate classifies correctly."""
    correct = 0
    for idx in batches:
        with P.autocast(device, precision):
            correct += int((model((x[idx] + delta[row_of(idx)]).clamp(0, 1)).argmax(1) == y[idx]).sum())
    return correct
