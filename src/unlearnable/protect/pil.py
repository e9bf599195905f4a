"""PIL: perturbation-induced linearisation (Liu, Chen & Zhang, "Perturbation-Induced Linearization: Constructing
Unlearnable Data with Solely Linear Classifiers", ICLR 2026).

The only surrogate is a bias-free *linear* classifier ``f(x) = x W1 W2`` trained on the clean images. Every image's
noise ``n`` (``||n||_inf <= eps``) then takes ``steps`` signed-gradient steps on

    lmd * CE(f(n), y)  +  (1 - lmd) * KL(uniform || softmax(f(x - n)))

and the protected image is ``x - n``. The first term makes the noise alone name the class through the linear model
(a linearly separable shortcut); the second leaves ``x - n`` with as little linear evidence for any class as the
budget allows. The authors' reading: unlearnable examples work by making a deep victim behave like a linear model on
the shortcut, so a linear surrogate is enough, and the whole fit takes seconds.

Differences from the paper: the linear model trains for at least ``min_steps`` SGD steps (the paper's 30 epochs of
CIFAR-10 are about 2,900 steps; on a set of a few thousand images 30 epochs would be 120), and everything is drawn
from the key. Under torchrun every rank trains the same linear model (same key, same batches: it is tiny) and
perturbs its round-robin share of the batches; the rows are then gathered, so 1 and N processes give the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.imageset import ImageSet
from ..errors import UserError
from ..log import log
from ..runtime import distributed as D
from . import _gradient as G
from .base import METHODS, Protection, require_labels
from .keys import Key
from .noise import NoiseTable


def linear_model(features: int, classes: int) -> nn.Module:
    """The paper's surrogate: two bias-free linear maps (pixels -> classes -> classes), no non-linearity."""
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes, bias=False),
                         nn.Linear(classes, classes, bias=False))


@METHODS.register("pil")
class PerturbationInducedLinearisation(Protection):
    """Sample-wise noise from a bias-free linear classifier: a linear shortcut, and images left without linear
    evidence (Liu et al., ICLR 2026)."""

    summary = "noise from a linear classifier: a linear shortcut, images without linear evidence (Liu et al., 2026)"
    #: tiny settings for the contract test
    test_params = {"min_steps": 4, "epochs": 1, "steps": 2}

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        lmd: float = 0.9  # weight of the shortcut term; 1 - lmd weighs the images' linear evidence
        steps: int = 30  # signed steps on each batch's noise, of size eps / 10
        epochs: int = 30  # linear model: SGD epochs over the clean images ...
        min_steps: int = 3000  # ... and at least this many steps
        lr: float = 0.003
        batch_size: int = 512

        def validate(self) -> None:
            G.check_budget(self.eps, "linf")
            if not 0.0 <= self.lmd <= 1.0:
                raise UserError(f"--param lmd={self.lmd}: must be in [0, 1]")
            G.check_positive(steps=self.steps, epochs=self.epochs, min_steps=self.min_steps, lr=self.lr,
                             batch_size=self.batch_size)

    def fit(self, data: ImageSet, key: Key) -> NoiseTable:
        require_labels(self.name, data)
        p, dev = self.params, self.device
        x, y = data.float().to(dev), data.labels.to(dev)
        k = data.num_classes
        model = self._train_linear(x, y, k, key)
        self.linear_model = model  # kept for inspection (tests, --progress); not part of the output
        for w in model.parameters():
            w.requires_grad_(False)
        noise = G.random_start(tuple(x.shape), p.eps, "linf", key.generator("pil/init")).to(dev)
        batches = list(torch.arange(len(x), device=dev).split(p.batch_size))
        for i in G.my_batches(list(range(len(batches)))):  # this rank's share (all of them: 1 rank)
            idx = batches[i]
            noise[idx] = self._descend(model, x[idx], y[idx], noise[idx], k)
        if D.world_size() > 1:
            noise = G.gather_batches(noise, batches)
        # the released image is x - n: the table holds -n, quantised and kept inside [0, 255] by apply
        return G.make_table(-noise, p.eps, "linf", "samplewise", data)

    def _train_linear(self, x: torch.Tensor, y: torch.Tensor, k: int, key: Key) -> nn.Module:
        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key.seed("pil/linear"))
            model = linear_model(x[0].numel(), k).to(self.device)
        opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9)
        per_epoch = G.steps_per_epoch(len(x), p.batch_size)
        epochs = max(p.epochs, -(-p.min_steps // per_epoch))
        total = epochs * per_epoch
        batches = G.index_batches(len(x), p.batch_size, key.generator("pil/batches"))  # a fresh shuffle per epoch
        for done in range(total):
            idx = next(batches).to(x.device)
            for group in opt.param_groups:  # cosine schedule over all steps
                group["lr"] = p.lr * 0.5 * (1 + math.cos(math.pi * done / total))
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        with torch.no_grad():
            acc = sum(int((model(x[i]).argmax(1) == y[i]).sum()) for i in torch.arange(len(x)).split(4096))
        self.linear_train_acc = acc / len(x)  # kept for inspection (tests, --progress); not part of the output
        if self.progress:
            log(f"pil: linear model trained for {epochs} epochs ({total} steps), train accuracy "
                f"{self.linear_train_acc:.3f}")
        return model

    def _descend(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, nb: torch.Tensor, k: int
                 ) -> torch.Tensor:
        p = self.params
        alpha = p.eps / 10
        uniform = torch.full((len(xb), k), 1.0 / k, device=xb.device)
        for _ in range(p.steps):
            n = nb.clone().requires_grad_(True)
            shortcut = F.cross_entropy(model(n), yb)
            log_p = F.log_softmax(model(xb - n), 1)
            evidence = F.kl_div(log_p, uniform, reduction="batchmean")  # KL(uniform || p(x - n))
            grad, = torch.autograd.grad(p.lmd * shortcut + (1 - p.lmd) * evidence, n)
            nb = (nb - alpha * grad.sign()).clamp(-p.eps, p.eps)
        return nb.detach()

    def models_trained(self) -> set[str]:
        return set()  # a linear model only: any registered architecture may verify it

    def apply(self, data: ImageSet, perturbation: NoiseTable) -> torch.Tensor:
        return G.apply_table(data, perturbation)
