"""Training-time defences an unauthorised trainer may use against unlearnable examples.

A defence is written ``NAME[:ARG[:ARG...]]``: positional arguments in the order the defence lists them, or
``key=value`` (``jpeg:10``, ``at:linf:8/255:steps=5``, ``finetune:pre_epochs=4:lr_scale=0.1``). Three kinds:

* dataset transforms, applied once to the training images (``jpeg``, ``grayscale``, ``iss``, ``blur``);
* batch hooks for the training loop (``aug`` crop/flip, ``cutout``, ``mixup``, ``cutmix``, ``at``);
* a start model (``finetune``: the victim starts from a model trained on clean data).

Test images are never transformed: the audit always measures clean test accuracy.
"""

from __future__ import annotations

import dataclasses
import io
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ..data.imageset import levels_to_uint8
from ..errors import UserError
from ..params import coerce  # the same string -> typed value rules as --param
from ..perturbation import project, random_crop_flip, random_resized_crop, step
from ..registry import Registry, did_you_mean
from ..runtime import distributed as D
from .loop import BatchHook, Recipe, train_classifier

DEFENSES: Registry[type[Defense]] = Registry("defence")


class Defense:
    """Base class: identity everywhere. Subclasses override what they change."""

    name: ClassVar[str] = "none"
    positional: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params: Any = None, spec: str | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.spec = spec or self.name

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """Dataset-level transform of uint8 training images ``(N, C, H, W)`` (same shape and dtype)."""
        return images

    def hook(self, num_classes: int) -> BatchHook | None:
        """A per-batch transform for the training loop, or None."""
        return None

    def recipe(self, recipe: Recipe) -> Recipe:
        return recipe

    def start_model(self, clean_images: torch.Tensor, clean_labels: torch.Tensor, num_classes: int, recipe: Recipe,
                    device: str) -> nn.Module | None:
        """The model the victim starts from (None: a fresh one)."""
        return None

    def __repr__(self) -> str:
        return f"Defense({self.spec})"


def parse_defense(spec: str) -> Defense:
    """``"jpeg:10"`` -> a configured :class:`Defense`; a one-line UserError (with "did you mean") otherwise."""
    what = f"--defense {spec}"
    name, *items = [s.strip() for s in str(spec).strip().split(":")]
    cls = DEFENSES.get(name)
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    hints = typing.get_type_hints(cls.Params)
    values: dict[str, Any] = {}
    for i, item in enumerate(items):
        if "=" in item:
            k, v = (t.strip() for t in item.split("=", 1))
        elif i < len(cls.positional):
            k, v = cls.positional[i], item
        else:
            raise UserError(f"{what}: too many arguments for '{name}' (takes {_usage(cls)})")
        if k not in fields:
            raise UserError(f"{what}: '{name}' has no argument '{k}'{did_you_mean(k, fields)}; takes {_usage(cls)}")
        values[k] = coerce(v, hints[k], f"{what}: {k}")
    params = cls.Params(**values)
    check = getattr(params, "validate", None)
    if check is not None:
        check(what)
    return cls(params, spec=str(spec).strip())


def parse_defenses(specs: list[str] | tuple[str, ...] | None) -> list[Defense]:
    return [parse_defense(s) for s in specs or () if s.strip() and s.strip() != "none"]


def _usage(cls: type[Defense]) -> str:
    names = [f.name for f in dataclasses.fields(cls.Params)]
    return ", ".join(names) if names else "no arguments"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _one_hot(target: torch.Tensor, k: int) -> torch.Tensor:
    return target if target.ndim == 2 else F.one_hot(target, k).float()


# ---------------------------------------------------------------------------------------------- none
@DEFENSES.register("none")
class NoDefense(Defense):
    summary = "plain training (the reference row of the audit)"


# ---------------------------------------------------------------------------------------------- dataset level
def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip (PIL, no chroma tricks) of uint8 ``(N, C, H, W)``; deterministic.

    PIL, not torchvision's batched ``encode_jpeg``/``decode_jpeg``: those give the same bytes about 3x faster
    (bench/library_ops.py) but are deprecated from torchvision 0.29 on (superseded by TorchCodec)."""
    out = torch.empty_like(images)
    mode = "L" if images.shape[1] == 1 else "RGB"
    for i, img in enumerate(images.numpy()):
        arr = img[0] if mode == "L" else img.transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(arr), mode=mode).save(buf, format="JPEG", quality=quality)
        dec = np.array(Image.open(io.BytesIO(buf.getvalue())).convert(mode))
        out[i] = torch.from_numpy(dec[None] if mode == "L" else dec.transpose(2, 0, 1).copy())
    return out


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma replicated over the channels (equal channels); grey images are returned unchanged."""
    if images.shape[1] == 1:
        return images.clone()
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    y = levels_to_uint8((images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255))
    return y.expand_as(images).contiguous()


@DEFENSES.register("jpeg")
class Jpeg(Defense):
    """JPEG compression of the training images (Liu et al., ICML 2023: low quality erases L-inf noise)."""

    summary = "JPEG-compress the training images (quality 1-100)"
    positional = ("quality",)

    @dataclass(frozen=True)
    class Params:
        quality: int = 10

        def validate(self, what: str) -> None:
            _require(1 <= self.quality <= 100, f"{what}: quality must be in 1..100")

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        return jpeg(images, self.params.quality)


@DEFENSES.register("grayscale")
class Grayscale(Defense):
    summary = "convert training images to grey (defeats colour shortcuts; no-op on grey data)"

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        return grayscale(images)


@DEFENSES.register("iss")
class ImageShortcutSqueezing(Defense):
    """ISS (Liu, Zhao & Larson, ICML 2023): grayscale, then JPEG at low quality."""

    summary = "image shortcut squeezing: grayscale + JPEG"
    positional = ("quality",)
    Params = Jpeg.Params

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        return jpeg(grayscale(images), self.params.quality)


@DEFENSES.register("blur")
class GaussianBlur(Defense):
    summary = "Gaussian blur of the training images (sigma in pixels)"
    positional = ("sigma",)

    @dataclass(frozen=True)
    class Params:
        sigma: float = 1.0

        def validate(self, what: str) -> None:
            _require(0 < self.sigma <= 20, f"{what}: sigma must be in (0, 20]")

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        s = self.params.sigma
        r = max(1, math.ceil(2 * s))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-t**2 / (2 * s * s))
        k = k / k.sum()
        c = images.shape[1]
        x = images.float()
        # Separable blur, replicate padding, rows then columns. Not torchvision's gaussian_blur (1.5-1.8x faster, same
        # interior to one grey level): its reflect padding needs a kernel narrower than the image, which sigma up to
        # 20 on 28-pixel images is not (bench/library_ops.py).
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        return levels_to_uint8(x.round_().clamp_(0, 255))


# ---------------------------------------------------------------------------------------------- batch hooks
@DEFENSES.register("aug")
class StandardAugmentation(Defense):
    summary = "standard augmentation: random crop (zero padding) and horizontal flip"
    positional = ("pad",)

    @dataclass(frozen=True)
    class Params:
        pad: int = 4
        flip: bool = True

        def validate(self, what: str) -> None:
            _require(0 <= self.pad <= 64, f"{what}: pad must be in 0..64")

    def hook(self, num_classes: int) -> BatchHook:
        return lambda x, t, m: (random_crop_flip(x, self.params.pad, self.params.flip), t)


@DEFENSES.register("rrc")
class RandomResizedCropAugmentation(Defense):
    summary = "random resized crop (torchvision's ImageNet recipe) at the image's own size, and horizontal flip"
    positional = ("scale",)

    @dataclass(frozen=True)
    class Params:
        scale: float = 0.08  # smallest crop, as a fraction of the image's area (torchvision's default)
        ratio: float = 4 / 3  # aspect ratios in [1 / ratio, ratio]
        flip: bool = True

        def validate(self, what: str) -> None:
            _require(0 < self.scale <= 1, f"{what}: scale must be in (0, 1]")
            _require(1 <= self.ratio <= 4, f"{what}: ratio must be in 1..4")

    def hook(self, num_classes: int) -> BatchHook:
        p = self.params
        return lambda x, t, m: (random_resized_crop(x, p.scale, p.ratio, p.flip), t)


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size x size`` square centred at a random pixel of each image (DeVries & Taylor 2017)."""
    b, _, h, w = x.shape
    y0 = torch.randint(0, h, (b, 1, 1)) - size // 2
    x0 = torch.randint(0, w, (b, 1, 1)) - size // 2
    yy, xx = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (yy >= y0) & (yy < y0 + size) & (xx >= x0) & (xx < x0 + size)  # clipped at the border
    return x * (~inside).to(x)[:, None]


@DEFENSES.register("cutout")
class Cutout(Defense):
    summary = "cutout: zero a random square per image (size 0 = half the image side)"
    positional = ("size",)

    @dataclass(frozen=True)
    class Params:
        size: int = 0

        def validate(self, what: str) -> None:
            _require(self.size >= 0, f"{what}: size must be >= 0")

    def hook(self, num_classes: int) -> BatchHook:
        def run(x: torch.Tensor, t: torch.Tensor, m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            return cutout(x, self.params.size or max(1, x.shape[-1] // 2)), t

        return run


def _beta(alpha: float) -> float:
    return float(torch.distributions.Beta(alpha, alpha).sample())


def mixup(x: torch.Tensor, t: torch.Tensor, k: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., ICLR 2018): convex combination of a batch with a shuffled copy; soft targets (B, K).

    Not torchvision's ``v2.MixUp``/``v2.CutMix``: they take integer labels only, so a batch whose targets an
    earlier hook already softened (chained defences) cannot pass through them, and they pair each image with its
    neighbour (a roll by one) rather than a random partner as in the papers."""
    lam = _beta(alpha)
    perm = torch.randperm(len(x)).to(x.device)
    soft = _one_hot(t, k)
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]


def cutmix(x: torch.Tensor, t: torch.Tensor, k: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al., ICCV 2019): paste a box from a shuffled copy; targets weighted by the box's area."""
    lam = _beta(alpha)
    h, w = x.shape[-2:]
    bh, bw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
    y0, y1, x0, x1 = max(cy - bh // 2, 0), min(cy + bh // 2, h), max(cx - bw // 2, 0), min(cx + bw // 2, w)
    perm = torch.randperm(len(x)).to(x.device)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the exact pasted area
    soft = _one_hot(t, k)
    return out, lam * soft + (1 - lam) * soft[perm]


@DEFENSES.register("mixup")
class Mixup(Defense):
    summary = "mixup with Beta(alpha, alpha) weights (soft targets)"
    positional = ("alpha",)

    @dataclass(frozen=True)
    class Params:
        alpha: float = 1.0

        def validate(self, what: str) -> None:
            _require(self.alpha > 0, f"{what}: alpha must be positive")

    def hook(self, num_classes: int) -> BatchHook:
        return lambda x, t, m: mixup(x, t, num_classes, self.params.alpha)


@DEFENSES.register("cutmix")
class CutMix(Mixup):
    summary = "CutMix with Beta(alpha, alpha) box areas (soft targets)"

    def hook(self, num_classes: int) -> BatchHook:
        return lambda x, t, m: cutmix(x, t, num_classes, self.params.alpha)


def pgd_attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: float, norm: str, steps: int,
               alpha: float) -> torch.Tensor:
    """PGD (Madry et al., ICLR 2018): maximise the loss from a random start; returns ``x_adv`` within ``eps``."""
    m = D.unwrap(model)
    was_training = m.training
    m.eval()  # the attack must not move BatchNorm statistics
    delta = project((torch.rand_like(x) * 2 - 1) * eps, eps, norm, x)
    for _ in range(steps):
        d = delta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(m(x + d), target), d)
        delta = project(step(delta, grad, alpha, norm), eps, norm, x)
    m.train(was_training)
    return (x + delta).detach()


@DEFENSES.register("at")
class AdversarialTraining(Defense):
    """Adversarial training: every batch is replaced by its PGD adversarial examples."""

    summary = "adversarial training with PGD (norm linf|l2, eps, steps, alpha 0 = 2.5*eps/steps)"
    positional = ("norm", "eps")

    @dataclass(frozen=True)
    class Params:
        norm: str = "linf"
        eps: float = 8 / 255
        steps: int = 5
        alpha: float = 0.0

        def validate(self, what: str) -> None:
            _require(self.norm in ("linf", "l2"), f"{what}: norm must be linf or l2, not '{self.norm}'")
            _require(self.eps > 0, f"{what}: eps must be positive")
            _require(self.steps >= 1, f"{what}: steps must be >= 1")
            _require(self.alpha >= 0, f"{what}: alpha must be >= 0")

    def hook(self, num_classes: int) -> BatchHook:
        p = self.params
        alpha = p.alpha or 2.5 * p.eps / p.steps
        return lambda x, t, m: (pgd_attack(m, x, t, p.eps, p.norm, p.steps, alpha), t)


# ---------------------------------------------------------------------------------------------- start model
@DEFENSES.register("finetune")
class FineTune(Defense):
    """Fine-tune a victim already trained on the clean training split (an attacker with a clean model)."""

    summary = "start from a clean-trained victim (pre_epochs, 0 = recipe epochs), fine-tune at lr x lr_scale"
    positional = ("pre_epochs",)

    @dataclass(frozen=True)
    class Params:
        pre_epochs: int = 0
        lr_scale: float = 0.1

        def validate(self, what: str) -> None:
            _require(self.pre_epochs >= 0, f"{what}: pre_epochs must be >= 0")
            _require(self.lr_scale > 0, f"{what}: lr_scale must be positive")

    def __init__(self, params: Any = None, spec: str | None = None) -> None:
        super().__init__(params, spec)
        self._cache: dict[tuple, nn.Module] = {}

    def recipe(self, recipe: Recipe) -> Recipe:
        return dataclasses.replace(recipe, lr=recipe.lr * self.params.lr_scale)

    def start_model(self, clean_images: torch.Tensor, clean_labels: torch.Tensor, num_classes: int, recipe: Recipe,
                    device: str) -> nn.Module:
        import copy

        pre = dataclasses.replace(recipe, epochs=self.params.pre_epochs or recipe.epochs)
        key = (pre, len(clean_labels), int(clean_images.float().sum()), device)
        if key not in self._cache:  # one clean pre-training serves every victim of an audit
            self._cache[key], _ = train_classifier(clean_images, clean_labels, num_classes, pre, device,
                                                   desc="clean pre-training")
        return copy.deepcopy(self._cache[key])
