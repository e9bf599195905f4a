"""BEO: Bayes-error optimisation (Zhang et al., "Towards Provably Unlearnable Examples via Bayes Error
Optimisation", 2025).

The Bayes error of a labelled distribution, ``BE = E_x[1 - max_k P(k | x)]``, lower-bounds the test error of
*every* classifier trained on it. BEO perturbs the training set so that an estimate of its Bayes error is as high
as possible, within an L-inf or L2 budget per image.

Estimator (our reading of the paper's plug-in estimate, in a learnt feature space):

* features ``z_i = f(x_i + delta_i)`` from a feature extractor trained to fit the clean data (``pretrain_epochs``;
  an undertrained extractor has chance-level features and the estimate starts near ``1 - 1/K``), optionally
  refreshed every ``refresh_every`` ascent steps by ``refresh_steps`` SGD steps on the *current perturbed* data
  (off by default: on MNIST each refresh undid most of the ascent and the noise stopped transferring);
* leave-one-out kernel class posteriors ``p(k | x_i) = sum_{j != i, y_j = k} K_ij / sum_{j != i} K_ij`` with an RBF
  kernel ``K_ij = exp(-||z_i - z_j||^2 / (2 h^2))``, ``h`` = ``bandwidth`` (0.5) x the median distance to the 10th
  nearest neighbour (a local scale: the median *pairwise* distance over-smooths to the class prior, and even the
  full 10-NN distance leaves ``BE_hat`` ~ 0.3 on features that classify every training digit correctly);
* ``BE_hat = mean_i (1 - max_k p(k | x_i))``, maximised by projected gradient ascent on ``delta``: sign steps
  (L-inf) or normalised steps (L2), then projection onto the ball and [0, 1].

Memory stays bounded: anchors come in mini-batches of ``batch_size`` and the reference set is visited in chunks of
``chunk`` rows, so the largest kernel block is ``batch_size x N`` (graph) and never ``N x N``. Gradients flow through
the anchors' features and through the same samples acting as references inside the mini-batch; the other
references are the features from the start of the step (a stochastic estimate of the full gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from ..errors import UserError
from ..log import log
from ..models import MODELS
from ..runtime import distributed as D
from ..runtime import precision as P
from . import _gradient as G
from .base import METHODS, Protection
from .keys import Key
from .noise import NoiseTable


def knn_bandwidth(z: torch.Tensor, g: torch.Generator, k: int = 10, sample: int = 512) -> float:
    """Median distance to the ``k``-th nearest neighbour, over a key-drawn subset of the features ``(N, D)``.

    A kernel as wide as the median *pairwise* distance averages over every class and returns the class prior
    (estimated Bayes error ~ 1 - 1/K for any data); the k-NN scale keeps the estimate local, as a plug-in
    posterior estimate must be.
    """
    idx = torch.randperm(len(z), generator=g)[:sample].to(z.device)
    d = torch.cdist(z[idx], z)
    kk = min(k + 1, len(z))  # +1: the point itself (distance 0)
    return float(d.topk(kk, dim=1, largest=False).values[:, -1].median().clamp_min(1e-6)) if len(z) > 1 else 1.0


def loo_posteriors(anchors: torch.Tensor, anchor_idx: torch.Tensor, refs: torch.Tensor, labels: torch.Tensor,
                   num_classes: int, h: float, chunk: int = 4096) -> torch.Tensor:
    """Leave-one-out RBF-kernel class posteriors of the anchors.

    Args:
        anchors: ``(B, D)`` anchor features (may carry gradients).
        anchor_idx: ``(B,)`` the anchors' rows in ``refs``; those kernel entries are dropped (leave-one-out).
        refs: ``(N, D)`` features of all samples; labels: ``(N,)`` their classes.
        h: kernel bandwidth; chunk: reference rows per kernel block (memory bound ``B x chunk``).
    Returns:
        ``(B, K)`` posteriors ``p(k | x_b)`` (rows sum to 1).
    """
    num = anchors.new_zeros(len(anchors), num_classes)
    for s in range(0, len(refs), chunk):
        r = refs[s:s + chunk]
        kern = torch.exp(-torch.cdist(anchors, r).pow(2) / (2 * h * h))  # (B, chunk)
        own = (anchor_idx[:, None] == torch.arange(s, s + len(r), device=r.device)[None, :])
        kern = kern.masked_fill(own, 0.0)  # leave one out: a sample never votes for itself
        num = num + kern @ F.one_hot(labels[s:s + chunk], num_classes).to(kern.dtype)
    # A tiny uniform prior keeps isolated points (all kernel weights ~ 0) well defined.
    num = num + 1e-12
    return num / num.sum(1, keepdim=True)


def bayes_error(posteriors: torch.Tensor) -> torch.Tensor:
    """Plug-in Bayes-error estimate ``mean(1 - max_k p(k|x))`` from ``(B, K)`` posteriors (a scalar)."""
    return (1.0 - posteriors.max(1).values).mean()


@METHODS.register("beo")
class BayesErrorOptimisation(Protection):
    """Maximise a leave-one-out kernel estimate of the Bayes error in a learnt feature space (sample-wise)."""

    summary = "maximise a kernel estimate of the Bayes error in feature space (Zhang et al., 2025)"
    #: tiny settings for the contract test
    test_params = {"steps": 2, "pretrain_epochs": 1, "refresh_every": 1, "refresh_steps": 1, "batch_size": 8}

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        norm: str = "linf"  # linf | l2
        surrogate: str = "smallcnn"  # feature extractor architecture
        steps: int = 20  # outer gradient-ascent steps over the whole set
        step_size: float = 0.0  # 0 -> 2.5 * eps / steps
        pretrain_epochs: int = 20  # extractor training on the clean data, once (2 left it at chance: BE_hat 0.66)
        refresh_every: int = 3  # refresh the extractor every this many steps ...
        refresh_steps: int = 0  # ... with this many SGD steps on the perturbed data (0: a fixed extractor)
        bandwidth: float = 0.5  # RBF bandwidth as a multiple of the median 10-NN feature distance
        batch_size: int = 256  # anchors per gradient step
        chunk: int = 4096  # reference rows per kernel block
        lr: float = 0.05

        def validate(self) -> None:
            G.check_budget(self.eps, self.norm, self.step_size)
            MODELS.get(self.surrogate)  # unknown name -> "did you mean"
            G.check_positive(steps=self.steps, refresh_every=self.refresh_every, bandwidth=self.bandwidth,
                             batch_size=self.batch_size, chunk=self.chunk, lr=self.lr)
            if self.pretrain_epochs < 0 or self.refresh_steps < 0:
                raise UserError("--param pretrain_epochs/refresh_steps: must be >= 0")

    def fit(self, data: ImageSet, key: Key) -> NoiseTable:
        p = self.params
        dev = self.device
        x, y = data.float().to(dev), data.labels.to(dev)
        delta = G.random_start(tuple(x.shape), p.eps, p.norm, key.generator("beo/init")).to(dev)
        delta = G.project(delta, p.eps, p.norm, x)
        model = G.make_surrogate(p.surrogate, data, key, "beo/extractor", dev)
        trainer = G.SurrogateTrainer(model, len(data), min(p.batch_size, 128), p.lr, key.generator("beo/batches"),
                                     dev, self.accel.precision)
        trainer.train(x, y, p.pretrain_epochs * G.steps_per_epoch(len(data), min(p.batch_size, 128)))
        alpha = G.default_step(p.eps, p.norm, p.steps, p.step_size)
        g = key.generator("beo/order")
        self.history: list[float] = []  # Bayes-error estimate at the start of every step
        for t in range(p.steps):
            if t > 0 and t % p.refresh_every == 0 and p.refresh_steps > 0:
                trainer.train(x, y, p.refresh_steps, delta)
            delta, be = self._ascent_step(model, x, y, delta, alpha, data.num_classes, g)
            self.history.append(be)
            if self.progress:
                log(f"beo step {t + 1}/{p.steps}: estimated Bayes error {be:.4f}")
        return G.make_table(delta, p.eps, p.norm, "samplewise", data)

    @torch.no_grad()
    def features(self, model, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Features ``(N, D)`` float32 of the perturbed set, in chunks (no graph)."""
        with P.autocast(self.device, self.accel.precision):
            return torch.cat([model.features((x[s:s + 512] + delta[s:s + 512]).clamp(0, 1)).float()
                              for s in range(0, len(x), 512)])

    def _ascent_step(self, model, x, y, delta, alpha: float, k: int, g: torch.Generator) -> tuple[torch.Tensor, float]:
        p = self.params
        refs = self.features(model, x, delta)
        h = p.bandwidth * knn_bandwidth(refs, g)
        delta = delta.clone()
        total = 0.0
        prec = self.accel.precision
        # Sharded over ranks by whole batches: every batch reads the same frozen ``refs``, so the result does not
        # depend on which rank ran it (see G.my_batches).
        batches = list(torch.randperm(len(x), generator=g).to(x.device).split(p.batch_size))
        for idx in G.my_batches(batches):
            d = delta[idx].clone().requires_grad_(True)
            with P.autocast(self.device, prec):
                z = model.features((x[idx] + d).clamp(0, 1)).float()
            # The batch's own rows of the reference set carry gradients too (they vote for each other).
            r = refs.index_put((idx,), z)
            be = bayes_error(loo_posteriors(z, idx, r, y, k, h, p.chunk))
            grad = P.input_grad(be * len(idx), d, prec)
            delta[idx] = G.project(G.step(d.detach(), grad, alpha, p.norm), p.eps, p.norm, x[idx])  # ascent
            total += float(be.detach()) * len(idx)
        if D.world_size() > 1:
            delta = G.gather_batches(delta, batches)
            total = float(D.all_reduce_sum(torch.tensor([total]))[0])
        return delta, total / len(x)

    def apply(self, data: ImageSet, perturbation: NoiseTable) -> torch.Tensor:
        return G.apply_table(data, perturbation)
