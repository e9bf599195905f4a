"""Victim and surrogate classifiers, random init, any input channels and size.

Every model is a :class:`Classifier`: ``features(x) -> (B, D)`` then a linear ``head``. Surrogate-based methods
(UC, BEO, EM) use ``features``; victims use ``forward``. Images of 64 px or less get the CIFAR stem (3x3 stride-1
first convolution, no max-pool), as in the unlearnable-examples literature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torchvision.models as tvm
from torchvision.models.vision_transformer import VisionTransformer

from ..registry import Registry

MODELS: Registry[Callable[..., Classifier]] = Registry("model")
SMALL = 64  # images at most this size use the CIFAR stem


class Classifier(nn.Module):
    """``features`` (B, C, H, W) -> (B, D), then ``head`` (B, D) -> (B, K)."""

    def __init__(self, features: nn.Module, dim: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.dim = dim
        self.head = nn.Linear(dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(name: str, in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """Instantiate a registered architecture for ``(in_channels, image_size, image_size)`` inputs."""
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, image_size=image_size)


def _pool_flatten(body: nn.Module) -> nn.Module:
    return nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten())


@MODELS.register("smallcnn")
def smallcnn(in_channels: int, num_classes: int, image_size: int, width: int = 32) -> Classifier:
    """Three conv blocks (fast on a CPU); the default victim of the built-in demo."""
    w = width
    body = nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
    )
    return Classifier(_pool_flatten(body), 4 * w, num_classes)


def _resnet(factory: Callable[..., tvm.ResNet], in_channels: int, num_classes: int, image_size: int) -> Classifier:
    m = factory(weights=None)
    if image_size <= SMALL:
        m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
    else:
        m.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    dim = m.fc.in_features
    body = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
    return Classifier(_pool_flatten(body), dim, num_classes)


@MODELS.register("resnet18")
def resnet18(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """ResNet-18 (torchvision, 3x3 stem for small images): the victim of most unlearnable-example papers."""
    return _resnet(tvm.resnet18, in_channels, num_classes, image_size)


@MODELS.register("resnet18-narrow")
def resnet18_narrow(in_channels: int, num_classes: int, image_size: int, width: int = 16) -> Classifier:
    """ResNet-18's layout (torchvision's basic blocks, [2, 2, 2, 2], the same stems) at a quarter of its width
    (16/32/64/128 channels): about 10x faster on a CPU. It stands in for ResNet-18 where a CPU must check a deep
    victim: in twelve runs on the benchmark's tissue and textures, paired with ResNet-18 by key and seed, it read
    from 25 points lower to 24 higher (1 higher on average), where the small CNN read 40 points lower on the
    protected photographs (docs/benchmarks.md). A cheap look, not a conservative one."""
    small = image_size <= SMALL
    stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False) if small else nn.Conv2d(in_channels, width, 7, 2, 3,
                                                                                         bias=False)
    layers: list[nn.Module] = [stem, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    if not small:
        layers.append(nn.MaxPool2d(3, 2, 1))
    c = width
    for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for j in range(2):
            stride = 2 if i > 0 and j == 0 else 1
            down = None
            if stride != 1 or c != planes:
                down = nn.Sequential(nn.Conv2d(c, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            layers.append(tvm.resnet.BasicBlock(c, planes, stride, down))
            c = planes
    return Classifier(_pool_flatten(nn.Sequential(*layers)), c, num_classes)


@MODELS.register("resnet50")
def resnet50(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """ResNet-50 (torchvision, random init; 3x3 stem for small images)."""
    return _resnet(tvm.resnet50, in_channels, num_classes, image_size)


@MODELS.register("vgg16")
def vgg16(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """VGG-16 with batch norm; a max-pool is skipped once the feature map is down to 2x2."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    c, size = in_channels, image_size
    for v in cfg:
        if v == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            c = int(v)
    return Classifier(_pool_flatten(nn.Sequential(*layers)), 512, num_classes)


@MODELS.register("densenet121")
def densenet121(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """DenseNet-121 (torchvision, random init; 3x3 stem for small images)."""
    m = tvm.densenet121(weights=None)
    if image_size <= SMALL:
        m.features.conv0 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        m.features.pool0 = nn.Identity()
    else:
        m.features.conv0 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    body = nn.Sequential(m.features, nn.ReLU(inplace=True))
    return Classifier(_pool_flatten(body), m.classifier.in_features, num_classes)


@MODELS.register("mobilenetv2")
def mobilenetv2(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """MobileNetV2 (torchvision, random init; stride-1 stem for small images)."""
    m = tvm.mobilenet_v2(weights=None)
    first = m.features[0][0]
    m.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, 1 if image_size <= SMALL else 2, 1, bias=False)
    return Classifier(_pool_flatten(m.features), m.last_channel, num_classes)


class _ViTFeatures(nn.Module):
    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        x = v._process_input(x)
        cls = v.class_token.expand(x.shape[0], -1, -1)
        return v.encoder(torch.cat([cls, x], dim=1))[:, 0]


@MODELS.register("vit")
def vit_small(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """A small ViT (6 layers, width 192, 3 heads); patch 4 for small images, 16 otherwise (must divide the size)."""
    candidates = (4, 7, 2, 8) if image_size <= SMALL else (16, 14, 8, 32)
    patch = next((p for p in candidates if image_size % p == 0), 1)
    vit = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=6, num_heads=3, hidden_dim=192,
                            mlp_dim=768, num_classes=num_classes)
    vit.conv_proj = nn.Conv2d(in_channels, 192, patch, patch)
    # The Classifier has its own head; torchvision's would never get a gradient, which DDP refuses.
    vit.heads = nn.Identity()
    return Classifier(_ViTFeatures(vit), 192, num_classes)
