"""ADV: class-targeted adversarial poisons (Fowl, Goldblum, Chiang, Geiping, Czaja & Goldstein, "Adversarial
Examples Make Strong Poisons", NeurIPS 2021).

A surrogate is first trained on the *clean* data (crop/flip, cosine learning rate). Each image ``x`` of class
``y`` is then pushed by projected gradient descent towards a *different* class ``t = (y + shift) mod K``:

    delta = argmin_{||delta||_inf <= eps}  E_aug [ L(f(aug(x + delta)), t) ]

The perturbation carries the non-robust features of class ``t`` (the ones a network trained on clean data uses),
while the image keeps its label ``y``. A victim trained on the protected set learns "features of ``t`` mean ``y``",
which is exactly wrong on clean images, so its clean accuracy falls towards (or below) chance. Unlike
error-minimising noise, nothing here is a shortcut the victim can ignore once it learns the real images: the
features the victim would learn from the images are the ones the noise contradicts.

``augment`` averages the attack over the victim's crop/flip augmentation (expectation over transformation), so
the features survive the victim's own augmentation. ``init=tiles`` starts from the class tiles of ``tiles``.

``ensemble=N`` trains N surrogates from different keyed starts (``surrogate`` may name several architectures
joined by ``+``, used in turn) and descends on their mean loss, so the planted features are the ones the surrogates
share rather than one network's quirks: an ensemble of crafting models is the usual way to make adversarial
features transfer to an unknown victim. Member 0 uses the single surrogate's key streams, so ``ensemble=1`` (the
default) gives the bytes it always gave.

Under torchrun the attack is sharded: every rank trains the same surrogate (same key, same batches), perturbs its
round-robin share of the batches, and the rows are gathered; each batch's crops come from a generator seeded by the
key and the batch number, so any rank produces the same noise for it as one process would.
"""

from __future__ import annotations

import math
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
from .base import METHODS, Protection, require_labels
from .em import INITS, tile_start
from .keys import Key
from .noise import NoiseTable


@METHODS.register("adv")
class AdversarialPoison(Protection):
    """Class-targeted adversarial poisons from a surrogate trained on the clean data (Fowl et al., 2021)."""

    summary = "class-targeted adversarial poisons from a surrogate trained on clean data (Fowl et al., 2021)"
    #: tiny settings for the contract test
    test_params = {"epochs": 1, "min_steps": 1, "steps": 2, "batch_size": 8}

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        surrogate: str = "smallcnn"  # one model name, or several joined by "+" (an ensemble cycles through them)
        ensemble: int = 1  # surrogates trained from different keyed starts; the attack averages their losses
        epochs: int = 15  # clean training of the surrogate (crop/flip, cosine learning rate) ...
        min_steps: int = 200  # ... and at least this many SGD steps
        steps: int = 40  # PGD steps per batch
        step_size: float = 0.0  # 0 -> 2.5 * eps / steps (Madry et al.), at least eps / 10
        # next: towards class (y + 1) mod K (the paper's permutation) | away: untargeted, away from y |
        # own: towards y itself (error-minimising against the trained surrogate: "hypocritical" perturbations,
        # Tao et al., NeurIPS 2021)
        target: str = "next"
        augment: int = 4  # crop padding of the keyed crop/flip averaged over in every PGD step (0: none)
        flip: bool = True  # mirror in the attack's augmentation (false for data that is not mirror-symmetric)
        init: str = "random"  # random | tiles | tiles-colour (em.INITS: the class tiles of `tiles` as the start)
        batch_size: int = 256
        lr: float = 0.05

        def validate(self) -> None:
            G.check_budget(self.eps, "linf", self.step_size)
            for name in self.surrogates():
                MODELS.get(name)
            if not 1 <= self.ensemble <= 16:
                raise UserError(f"--param ensemble={self.ensemble}: the number of surrogates must be in 1..16")
            look_up_option(self.target, ("next", "away", "own"), "--param target")
            look_up_option(self.init, tuple(INITS), "--param init")
            if not 0 <= self.augment <= 16:
                raise UserError(f"--param augment={self.augment}: crop padding must be in 0..16 (0: none)")
            G.check_positive(epochs=self.epochs, min_steps=self.min_steps, steps=self.steps,
                             batch_size=self.batch_size, lr=self.lr)

        def surrogates(self) -> list[str]:
            """The architecture of each ensemble member (``surrogate`` split on ``+``, repeated in turn)."""
            names = [n.strip() for n in self.surrogate.split("+")]
            if any(not n for n in names):
                raise UserError(f"--param surrogate={self.surrogate}: an empty model name")
            count = max(self.ensemble, len(names))
            return [names[j % len(names)] for j in range(count)]

    def fit(self, data: ImageSet, key: Key) -> NoiseTable:
        require_labels(self.name, data)
        if data.num_classes < 2:
            raise UserError(f"--method adv: needs at least 2 classes (got {data.num_classes})")
        p, dev = self.params, self.device
        x, y = data.float().to(dev), data.labels.to(dev)
        models = [self._train_surrogate(x, y, data, key, name, j) for j, name in enumerate(p.surrogates())]
        # kept for inspection (tests, --progress); not part of the output
        self.surrogate_models, self.surrogate_model = models, models[0]
        if INITS[p.init]:
            delta = tile_start(data, key, p.eps, INITS[p.init]).to(dev)
        else:
            delta = G.random_start(tuple(x.shape), p.eps, "linf", key.generator("adv/init")).to(dev)
        delta = G.project(delta, p.eps, "linf", x)
        target = (y + 1) % data.num_classes if p.target == "next" else y
        alpha = p.step_size if p.step_size > 0 else max(2.5 * p.eps / p.steps, p.eps / 10)
        batches = list(torch.arange(len(x), device=dev).split(p.batch_size))
        aug_seed = key.seed("adv/augment")
        for i in G.my_batches(list(range(len(batches)))):  # this rank's round-robin share (all of them: 1 rank)
            idx = batches[i]
            g = torch.Generator().manual_seed(aug_seed + i)  # per batch: the same crops on whichever rank runs it
            delta[idx] = self._attack(models, x[idx], target[idx], delta[idx], alpha, g)
            if self.progress and (i + 1) % 10 == 0:
                log(f"adv: {i + 1}/{len(batches)} batches perturbed")
        if D.world_size() > 1:
            delta = G.gather_batches(delta, batches)
        return G.make_table(delta, p.eps, "linf", "samplewise", data)

    def _train_surrogate(self, x: torch.Tensor, y: torch.Tensor, data: ImageSet, key: Key, name: str, member: int):
        p = self.params
        tag = "" if member == 0 else f"/{member}"  # member 0: the single surrogate's streams (same bytes as before)
        model = G.make_surrogate(name, data, key, "adv/surrogate" + tag, self.device)
        trainer = G.SurrogateTrainer(model, len(x), min(64, p.batch_size), p.lr, key.generator("adv/batches" + tag),
                                     self.device, self.accel.precision)
        g_aug = key.generator("adv/train-augment" + tag)
        transform = (lambda xb: random_crop_flip(xb, p.augment, p.flip, g_aug)) if p.augment else None
        # at least min_steps: on a small set a few epochs are a few steps, and a surrogate that has not learnt the
        # classes has no class features to plant
        total = max(p.epochs * G.steps_per_epoch(len(x), min(64, p.batch_size)), p.min_steps)
        chunk = max(1, total // 20)  # cosine schedule, updated every chunk of steps
        done = 0
        while done < total:
            n = min(chunk, total - done)
            for group in trainer.opt.param_groups:
                group["lr"] = p.lr * 0.5 * (1 + math.cos(math.pi * done / total))
            trainer.train(x, y, n, transform=transform)
            done += n
        if self.progress:
            with torch.no_grad():
                acc = sum(int((model(x[i]).argmax(1) == y[i]).sum()) for i in torch.arange(len(x)).split(512))
            log(f"adv: surrogate {member} ({name}) trained for {p.epochs} epochs, train accuracy {acc / len(x):.3f}")
        return model

    def _attack(self, models: list, xb: torch.Tensor, tb: torch.Tensor, delta: torch.Tensor, alpha: float,
                g: torch.Generator) -> torch.Tensor:
        """``steps`` of projected signed-gradient descent on the surrogates' mean loss towards ``tb`` (ascent away
        from it for ``away``)."""
        p = self.params
        sign = 1.0 if p.target == "away" else -1.0
        for _ in range(p.steps):
            d = delta.clone().requires_grad_(True)
            view = (xb + d).clamp(0, 1)
            if p.augment:
                view = random_crop_flip(view, p.augment, p.flip, g)
            with P.autocast(self.device, self.accel.precision):
                loss = sum(F.cross_entropy(m(view).float(), tb) for m in models) / len(models)
            grad = P.input_grad(loss, d, self.accel.precision)
            delta = G.project(G.step(delta, sign * grad, alpha, "linf"), p.eps, "linf", xb)
        return delta.detach()

    def models_trained(self) -> set[str]:
        return set(self.params.surrogates())

    def apply(self, data: ImageSet, perturbation: NoiseTable) -> torch.Tensor:
        return G.apply_table(data, perturbation)
