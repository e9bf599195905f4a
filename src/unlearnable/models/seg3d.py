"""3D segmentation networks: the Med3D / MedicalNet ResNet family and MONAI's UNet.

The ResNets follow Med3D (Chen et al., 2019, "Med3D: Transfer Learning for 3D Medical Image Analysis") and the
MedicalNet code: conv1 7×7×7 stride 2, max-pool stride 2, layer1–4 with strides (1, 2, 1, 1) and dilations
(1, 1, 2, 4), so the features have output stride 8; the segmentation head (``conv_seg``: transposed conv ×2, two
convs) is followed by trilinear upsampling to the input size. Parameter names match MedicalNet checkpoints
(``module.`` prefix stripped), so ``resnet_10.pth`` … ``resnet_50.pth`` load with ``width=64``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..registry import Registry

SEG_MODELS: Registry[Callable[..., nn.Module]] = Registry("segmentation model")


def _conv3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv3(cin, planes, stride, dilation), nn.BatchNorm3d(planes)
        self.conv2, self.bn2 = _conv3(planes, planes, dilation=dilation), nn.BatchNorm3d(planes)
        self.relu, self.downsample = nn.ReLU(inplace=True), downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv3d(cin, planes, 1, bias=False), nn.BatchNorm3d(planes)
        self.conv2, self.bn2 = _conv3(planes, planes, stride, dilation), nn.BatchNorm3d(planes)
        self.conv3, self.bn3 = nn.Conv3d(planes, planes * 4, 1, bias=False), nn.BatchNorm3d(planes * 4)
        self.relu, self.downsample = nn.ReLU(inplace=True), downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class MedResNet3d(nn.Module):
    """Med3D ResNet with a segmentation head: ``(B, C, D, H, W)`` → logits ``(B, K, D, H, W)``.

    Args:
        block, layers: residual block type and blocks per stage (ResNet-10: BasicBlock, [1, 1, 1, 1]).
        in_channels: MR channels C. num_classes: K. width: channels of layer1 (64 in Med3D; smaller for CPU).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], in_channels: int = 1,
                 num_classes: int = 2, width: int = 64, head_channels: int = 32):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv3d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], dilation=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], dilation=4)
        feat = width * 8 * block.expansion
        self.conv_seg = nn.Sequential(
            nn.ConvTranspose3d(feat, head_channels, 2, stride=2), nn.BatchNorm3d(head_channels), nn.ReLU(inplace=True),
            nn.Conv3d(head_channels, head_channels, 3, padding=1, bias=False), nn.BatchNorm3d(head_channels),
            nn.ReLU(inplace=True), nn.Conv3d(head_channels, num_classes, 1, bias=False))
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm3d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, block: Any, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:  # MedicalNet shortcut type B
            down = nn.Sequential(nn.Conv3d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                 nn.BatchNorm3d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, dilation, down)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features at output stride 8: ``(B, C, D, H, W)`` → ``(B, F, D/8, H/8, W/8)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_seg(self.features(x))
        return F.interpolate(out, size=x.shape[2:], mode="trilinear", align_corners=False)

    def encoder(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]

    def decoder(self) -> list[nn.Module]:
        return [self.conv_seg]


_DEPTHS = {10: (BasicBlock, [1, 1, 1, 1]), 18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
           50: (Bottleneck, [3, 4, 6, 3])}


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(in_channels: int = 1, num_classes: int = 2, width: int = 64) -> nn.Module:
        block, layers = _DEPTHS[depth]
        return MedResNet3d(block, layers, in_channels, num_classes, width)

    build.__doc__ = f"Med3D ResNet-{depth} with a segmentation head."
    return build


for _d in _DEPTHS:
    SEG_MODELS.register(f"resnet{_d}")(_resnet(_d))


@SEG_MODELS.register("unet")
class UNet3d(nn.Module):
    """MONAI's UNet (channels width·(1, 2, 4, 8), strides 2) with encoder/decoder views for unlearning."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16):
        super().__init__()
        from monai.networks.nets import UNet

        self.net = UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
                        channels=tuple(width * m for m in (1, 2, 4, 8)), strides=(2, 2, 2), num_res_units=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _split(self) -> tuple[list[nn.Module], list[nn.Module]]:
        # MONAI nests Sequential(down, SkipConnection(Sequential(down, ..., up)), up); the innermost is the bottom
        enc, dec, seq = [], [], self.net.model
        while isinstance(seq, nn.Sequential) and len(seq) == 3:
            enc.append(seq[0])
            dec.append(seq[2])
            seq = seq[1].submodule
        enc.append(seq)
        return enc, dec

    def encoder(self) -> list[nn.Module]:
        return self._split()[0]

    def decoder(self) -> list[nn.Module]:
        return self._split()[1]


class ShardEnsemble(nn.Module):
    """SISA's predictor (segment/shards.py): the mean of the members' softmax probabilities, returned as
    log-probabilities (valid logits): ``(B, C, D, H, W)`` → ``(B, K, D, H, W)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-8).log()

    def encoder(self) -> list[nn.Module]:
        return [e for m in self.members for e in m.encoder()]

    def decoder(self) -> list[nn.Module]:
        return [d for m in self.members for d in m.decoder()]


def build_seg_model(name: str, in_channels: int, num_classes: int, width: int | None = None) -> nn.Module:
    """Build a registered model; ``width`` None means the published default (64 for ResNets, 16 for UNet)."""
    factory = SEG_MODELS.get(name)
    kw = {} if width is None else {"width": int(width)}
    return factory(in_channels=in_channels, num_classes=num_classes, **kw)


def module_params(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def load_pretrained(model: nn.Module, path: str | Path, min_fraction: float = 0.5) -> dict[str, int]:
    """Load MedicalNet-style weights into ``model``'s encoder; returns the key report.

    ``module.`` prefixes are stripped. Tensors load where name and shape match; a 1-channel ``conv1`` is repeated
    over C input channels (divided by C, so a constant input gives the same response). The segmentation head is
    never loaded (MedicalNet's was trained for other labels). Raises UserError when fewer than ``min_fraction`` of
    the encoder's tensors match: such a file is for another architecture or width.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--pretrained {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"--pretrained {path}: not a PyTorch checkpoint ({type(e).__name__})") from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise UserError(f"--pretrained {path}: no state dict inside")
    sd = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    own = model.state_dict()
    enc_keys = [k for k in own if not k.startswith("conv_seg.")]
    matched, shape_mismatch = {}, 0
    for k in enc_keys:
        if k not in sd:
            continue
        v = sd[k]
        if k == "conv1.weight" and v.shape[1] == 1 and own[k].shape[1] > 1 and v.shape[0] == own[k].shape[0]:
            v = v.repeat(1, own[k].shape[1], 1, 1, 1) / own[k].shape[1]
        if v.shape == own[k].shape:
            matched[k] = v
        else:
            shape_mismatch += 1
    report = {"matched": len(matched), "encoder_tensors": len(enc_keys), "missing": len(enc_keys) - len(matched),
              "shape_mismatch": shape_mismatch, "unexpected": len([k for k in sd if k not in own])}
    if len(matched) < min_fraction * len(enc_keys):
        raise UserError(f"--pretrained {path}: only {len(matched)}/{len(enc_keys)} encoder tensors match "
                        f"({shape_mismatch} with another shape); is it for this model and --width?")
    model.load_state_dict(matched, strict=False)
    return report
