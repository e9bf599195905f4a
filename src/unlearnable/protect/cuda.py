"""CUDA: Convolution-based Unlearnable DAtaset (Sadasivan, Soltanolkotabi & Feizi, CVPR 2023).

Every class gets a random ``k x k`` filter drawn from the key, taps uniform in ``[0, blur]`` with one tap (at a
random position) set to ``center``; each training image is convolved depthwise with its class's filter and
divided by its own maximum. A model latches on to the class-wise blur instead of the content, so it fails on clean
images. The method needs no model and is cheap; it is *not* norm-bounded (the blur changes many pixels a little),
which is why PSNR/SSIM are reported instead of an L-infinity budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet, levels_to_uint8, to_uint8
from ..errors import UserError
from .base import METHODS, Protection, add_within_linf
from .keys import Key


@dataclass(frozen=True)
class Filters:
    """Class-wise depthwise filters ``(K, C, 1, k, k)``."""

    weight: torch.Tensor


def convolve_classwise(x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its class's filter in one grouped convolution, then max-normalise and quantise.

    Args:
        x: uint8 images ``(B, C, H, W)``.
        labels: ``(B,)`` class indices into ``weight``.
        weight: ``(K, C, 1, k, k)`` filters.
    Returns:
        uint8 ``(B, C, H, W)``: ``round(255 * clamp(y / max(y), 0, 1))`` per image, as the published code.
    """
    b, c, h, w = x.shape
    k = weight.shape[-1]
    per_sample = weight[labels].reshape(b * c, 1, k, k)  # (B*C, 1, k, k): one group per (image, channel)
    xf = x.reshape(1, b * c, h, w)
    if xf.device.type == "cpu" and h * w > 64 * 64:
        # Large planes: the grouped convolution runs 2-7x faster channels-last on CPU (measured at 224 x 224, 1-4
        # images; slower at 28 x 28), docs/benchmarks.md. Copied into a fresh buffer: a decoded image stacked by
        # numpy is channels-last already, but with a batch stride that sends oneDNN down its slow path (2.9 ms
        # against 0.4 ms per 224 x 224 image).
        xf = torch.div(xf, 255.0, out=torch.empty(xf.shape, device=xf.device, memory_format=torch.channels_last))
    else:
        xf = xf.float().div_(255.0)
    y = F.conv2d(xf, per_sample, padding=k // 2, groups=b * c).reshape(b, c, h, w)
    peak = y.amax(dim=(1, 2, 3), keepdim=True).clamp_min_(1e-12)  # per-image max normalisation (paper's code)
    # in place, in the convolution's own layout (channels-last for large planes, which is also the layout the
    # image codecs read and write: the pixels are never transposed on their way to the file)
    return levels_to_uint8(y.div_(peak).mul_(255.0).round_().clamp_(0, 255))


def convolve_per_image(images: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The algorithm as published: one depthwise ``Conv2d`` module per class, applied one image at a time.

    Kept as the reference that the batched :func:`convolve_classwise` is tested and benchmarked against.

    Args:
        images: uint8 ``(N, C, H, W)``; labels: ``(N,)``; weight: ``(K, C, 1, k, k)``.
    Returns:
        uint8 ``(N, C, H, W)``.
    """
    c, k = images.shape[1], weight.shape[-1]
    convs = []
    for w in weight:
        conv = torch.nn.Conv2d(c, c, k, groups=c, padding=k // 2, bias=False)
        conv.weight.data.copy_(w)
        convs.append(conv)
    out = torch.empty_like(images)
    with torch.no_grad():
        for i in range(len(images)):
            img = convs[int(labels[i])](images[i:i + 1].float() / 255)
            out[i] = to_uint8(img / img.max())[0]
    return out


@METHODS.register("cuda")
class ClasswiseConvolution(Protection):
    """CUDA: class-wise random convolutions from a private key (model-free)."""

    summary = "class-wise random blur filters from a private key (Sadasivan et al., CVPR 2023); model-free"
    size_free = True  # a 3x3 filter applies to an image of any size
    fit_reads_pixels = False

    @dataclass(frozen=True)
    class Params:
        blur: float = 0.3  # filter taps ~ U(0, blur)
        kernel: int = 3  # filter size k (odd)
        center: float = 1.0  # value of the one emphasised tap
        same_channels: bool = True  # one filter for all channels, as in the paper's code
        chunk: int = 0  # images per grouped convolution; 0 = auto, about 1 MiB of float32 (cache-sized)
        eps: float = 0.0  # 0: the published, unbounded filters; > 0: the change is projected onto this L-inf ball

        def validate(self) -> None:
            if self.kernel < 1 or self.kernel % 2 == 0:
                raise UserError(f"--param kernel={self.kernel}: must be a positive odd number")
            if self.blur < 0:
                raise UserError(f"--param blur={self.blur}: must be >= 0")
            if self.chunk < 0:
                raise UserError(f"--param chunk={self.chunk}: must be >= 0 (0 = automatic)")
            if not 0 <= self.eps <= 1:
                raise UserError(f"--param eps={self.eps}: must be 0 (unbounded, as published) or in (0, 1]")

    def linf_budget(self) -> float | None:
        return float(self.params.eps) if self.params.eps > 0 else None

    def fit(self, data: ImageSet, key: Key) -> Filters:
        p = self.params
        g = key.generator("cuda/filters")
        n_cls, c, k = data.num_classes, data.channels, p.kernel
        w = torch.rand(n_cls, c, 1, k, k, generator=g, dtype=torch.float64) * p.blur
        pos = torch.randint(0, k * k, (n_cls,), generator=g)
        w = w.reshape(n_cls, c, k * k)
        w[torch.arange(n_cls), 0, pos] = p.center
        if p.same_channels:
            w[:, 1:] = w[:, :1]
        return Filters(w.reshape(n_cls, c, 1, k, k).float())

    def apply(self, data: ImageSet, perturbation: Filters) -> torch.Tensor:
        weight = perturbation.weight.to(self.device)
        if int(data.labels.max()) >= weight.shape[0]:
            raise UserError(f"labels: class {int(data.labels.max())} has no filter ({weight.shape[0]} fitted)")
        out = torch.empty_like(data.images)
        # Chunks that fit in cache: measured 2-3x faster on CPU than one huge grouped convolution, which spills
        # every intermediate to memory (bench/protect.py, docs/benchmarks.md).
        per_image = data.images[0].numel() if len(data) else 1
        chunk = self.params.chunk or max(1, (1 << 18) // per_image)
        for s in range(0, len(data), chunk):
            sl = slice(s, s + chunk)
            out[sl] = convolve_classwise(data.images[sl].to(self.device), data.labels[sl].to(self.device), weight).cpu()
        if self.params.eps > 0:  # budgeted variant: keep the filter's change only up to eps per pixel
            out = add_within_linf(data.images, (out.float() - data.images.float()) / 255.0, self.params.eps)
        return out
