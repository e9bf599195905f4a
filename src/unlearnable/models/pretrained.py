"""Pretrained weights from local files: torchvision and timm checkpoints mapped onto this package's classifiers.

UC's paper embeds images with an off-the-shelf ImageNet model. People have those as files: a torchvision
``state_dict()`` (``conv1.weight``, ``layer1.0.bn1.weight``, ``fc.weight`` ...), a training checkpoint that wraps one
(``{"state_dict": ...}``, ``{"model": ...}``, ``module.`` prefixes from DDP), or a timm checkpoint (ResNets keep
torchvision's names; MobileNetV2 is ``conv_stem`` / ``blocks.S.B.conv_pw`` / ``conv_head``), possibly as
``.safetensors``. Every name is mapped *explicitly* onto :mod:`.classifiers`' layout (``features`` = ``Sequential(body,
pool, flatten)``); nothing is matched by position or by shape alone.

What the checkpoint dictates is adopted and reported: its first convolution (a 7x7/2 ResNet stem + max-pool replaces
the small-image 3x3 stem; its input channels), and its input convention (ImageNet mean/std; grey images are
repeated to RGB, which is exactly what summing the RGB filters would compute). The classifier head (``fc`` /
``classifier``) never fits a new task and is counted as ``head``, not as an error.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import UserError
from .classifiers import MODELS, Classifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "net", "state_dict_ema")
PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile, Lightning-style wrappers
_RESNETS = {(2, 2, 2, 2, False): "resnet18", (3, 4, 6, 3, False): "resnet34", (3, 4, 6, 3, True): "resnet50",
            (3, 4, 23, 3, True): "resnet101", (3, 8, 36, 3, True): "resnet152"}
_TIMM_MBV2_STAGES = (1, 2, 3, 4, 3, 3, 1)  # blocks per stage of timm's mobilenetv2_100 (torchvision: features.1-17)


@dataclass(frozen=True)
class Identity:
    """What a state dict looks like: ``family`` (mapping to use), ``arch`` (our registered name, if any) and a
    human description for messages."""

    family: str
    arch: str | None
    description: str


# -- reading ------------------------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike, what: str = "--surrogate-weights") -> dict[str, torch.Tensor]:
    """Tensors of a ``.pt``/``.pth``/``.bin`` (loaded with ``weights_only``) or ``.safetensors`` file, unwrapped."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p}: no such file")
    if p.suffix == ".safetensors":
        obj: Any = _read_safetensors(p, what)
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad user file
            raise UserError(f"{what} {p}: not a PyTorch weights file, or it holds Python objects besides tensors "
                            f"({type(e).__name__}); save just the state dict: torch.save(ckpt['state_dict'], ...)"
                            ) from None
    for _ in range(3):  # {"state_dict": {"model": ...}} and similar nests
        if isinstance(obj, dict):
            inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is not None and not _is_tensor_dict(obj):
                obj = inner
    if not isinstance(obj, dict) or not obj or not _is_tensor_dict(obj):
        raise UserError(f"{what} {p}: expected a state dict of tensors (or a checkpoint with 'state_dict'/'model')")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _is_tensor_dict(d: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _read_safetensors(p: Path, what: str) -> dict[str, torch.Tensor]:
    """The safetensors layout (8-byte little-endian header length, JSON header, raw little-endian buffer)."""
    try:
        raw = p.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        data = memoryview(raw)[8 + n:]
        out = {}
        for name, spec in header.items():
            if name == "__metadata__":
                continue
            a, b = spec["data_offsets"]
            t = torch.frombuffer(bytearray(data[a:b]), dtype=_ST_DTYPES[spec["dtype"]]) if b > a else \
                torch.empty(0, dtype=_ST_DTYPES[spec["dtype"]])
            out[name] = t.reshape(spec["shape"])
        return out
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise UserError(f"{what} {p}: not a valid .safetensors file ({type(e).__name__})") from None


# -- recognising --------------------------------------------------------------------------------------------------
def identify(sd: dict[str, torch.Tensor]) -> Identity:
    """Guess the architecture of a state dict from its names (and a few shapes)."""
    keys = set(sd)
    if any(k.startswith("features.") for k in keys) and any(k.startswith("head.") for k in keys):
        return Identity("unlearnable", None, "a classifier saved by this package")
    if "conv1.weight" in keys or "conv1.0.weight" in keys:
        if "layer1.0.conv1.weight" in keys:
            return _identify_resnet(sd)
    if "features.0.0.weight" in keys and any(re.match(r"features\.\d+\.conv\.", k) for k in keys):
        return Identity("tv_mobilenetv2", "mobilenetv2", "a torchvision mobilenet_v2 state dict")
    if any(re.match(r"features\.\d+\.block\.", k) for k in keys):
        return Identity("other", None, "a torchvision mobilenet_v3 state dict")
    if "conv_stem.weight" in keys and any(k.startswith("blocks.") for k in keys):
        if any(".se." in k for k in keys):
            return Identity("other", None, "a timm efficientnet/mobilenetv3 state dict (squeeze-excitation blocks)")
        return Identity("timm_mobilenetv2", "mobilenetv2", "a timm mobilenetv2 state dict")
    if any(k.startswith("features.denseblock") for k in keys):
        return Identity("other", None, "a torchvision densenet state dict")
    if any(k.startswith("visual.") for k in keys) or "positional_embedding" in keys:
        return Identity("other", None, "a CLIP checkpoint")
    if "conv_proj.weight" in keys or any(k.startswith("encoder.layers.") for k in keys):
        return Identity("other", None, "a torchvision vision transformer state dict")
    if "patch_embed.proj.weight" in keys:
        return Identity("other", None, "a timm vision transformer state dict")
    if any(re.match(r"features\.\d+\.weight", k) for k in keys) and any(k.startswith("classifier.") for k in keys):
        return Identity("other", None, "a torchvision vgg state dict")
    return Identity("other", None, "an unrecognised state dict")


def _identify_resnet(sd: dict[str, torch.Tensor]) -> Identity:
    blocks = tuple(len({m.group(1) for k in sd if (m := re.match(rf"layer{i}\.(\d+)\.", k))}) for i in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in sd
    if "conv1.0.weight" in sd:  # timm's -d/-t variants: three 3x3 stem convolutions
        return Identity("other", None, "a timm resnet with a deep stem (resnet-d/-t)")
    name = _RESNETS.get((*blocks, bottleneck))
    if name is not None and bottleneck and sd["layer1.0.conv2.weight"].shape[0] != 64:
        name = None  # wide / grouped variants
    desc = f"a torchvision/timm {name} state dict" if name else f"a torchvision/timm resnet with blocks {blocks}"
    return Identity("resnet", name if name in MODELS.names() else None, desc)


# -- renaming -----------------------------------------------------------------------------------------------------
def _rename_resnet(k: str) -> str | None:
    if k.startswith("fc."):
        return None
    k = re.sub(r"^conv1\.", "0.0.", k)
    k = re.sub(r"^bn1\.", "0.1.", k)
    return re.sub(r"^layer([1-4])\.", lambda m: f"0.{int(m.group(1)) + 3}.", k)


def _rename_tv_mobilenetv2(k: str) -> str | None:
    return None if k.startswith("classifier.") else re.sub(r"^features\.", "0.", k)


_TIMM_DS = {"conv_dw": "conv.0.0", "bn1": "conv.0.1", "conv_pw": "conv.1", "bn2": "conv.2"}
_TIMM_IR = {"conv_pw": "conv.0.0", "bn1": "conv.0.1", "conv_dw": "conv.1.0", "bn2": "conv.1.1", "conv_pwl": "conv.2",
            "bn3": "conv.3"}


def _rename_timm_mobilenetv2(k: str) -> str | None:
    if k.startswith("classifier."):
        return None
    for src, dst in (("conv_stem.", "0.0.0."), ("bn1.", "0.0.1."), ("conv_head.", "0.18.0."), ("bn2.", "0.18.1.")):
        if k.startswith(src):
            return dst + k[len(src):]
    m = re.match(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)$", k)
    if not m or int(m.group(1)) >= len(_TIMM_MBV2_STAGES):
        return k  # left as it is: reported as unexpected
    stage, block, part, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    index = 1 + sum(_TIMM_MBV2_STAGES[:stage]) + block  # torchvision's features.N
    table = _TIMM_DS if stage == 0 else _TIMM_IR
    return f"0.{index}.{table[part]}.{rest}" if part in table else k


_RENAMERS: dict[str, Callable[[str], str | None]] = {
    "unlearnable": lambda k: None if k.startswith("head.") else k.removeprefix("features."),
    "resnet": _rename_resnet, "tv_mobilenetv2": _rename_tv_mobilenetv2, "timm_mobilenetv2": _rename_timm_mobilenetv2,
}
#: Where the first convolution lives in our ``features`` for each architecture (see classifiers.py).
_STEM = {"resnet18": ("0", "0"), "resnet50": ("0", "0"), "mobilenetv2": ("0", "0", "0")}


# -- loading ------------------------------------------------------------------------------------------------------
def load_pretrained(model: Classifier, arch: str, sd: dict[str, torch.Tensor], source: str,
                    min_match: float = 0.9) -> dict[str, Any]:
    """Map ``sd`` onto ``model.features`` (adapting the stem and input as the checkpoint needs) and load it.

    Returns the report ``{"file", "looks_like", "matched", "missing", "unexpected", "mismatched_shape", "head",
    "adapted"}`` (counts of tensors). Raises UserError if fewer than ``min_match`` of the feature tensors match;
    the message names the architecture the file looks like.
    """
    ident = identify(sd)
    pretrained = ident.family in _RENAMERS and ident.family != "unlearnable"  # a torchvision/timm checkpoint
    rename = _RENAMERS[ident.family if pretrained else "unlearnable"]
    given: dict[str, torch.Tensor] = {}
    head = 0
    for k, v in sd.items():
        new = rename(k)
        if new is None:
            head += 1
        else:
            given[new] = v
    adapted: list[str] = []
    in_channels = _first_conv(model, arch).in_channels if arch in _STEM else None
    if pretrained and arch in _STEM:
        adapted = _adapt_stem(model, arch, given)
    want = model.features.state_dict()
    matched = {k: v for k, v in given.items() if k in want and want[k].shape == v.shape}
    report = {"file": source, "looks_like": ident.description, "matched": len(matched),
              "missing": len([k for k in want if k not in matched]),
              "unexpected": len([k for k in given if k not in want]),
              "mismatched_shape": len([k for k in given if k in want and want[k].shape != given[k].shape]),
              "head": head, "adapted": adapted}
    if len(matched) < min_match * len(want):
        hint = (f"pass --surrogate {ident.arch}" if ident.arch and ident.arch != arch else
                f"supported pretrained surrogates: {', '.join(sorted(_STEM))} (torchvision or timm names)")
        raise UserError(f"--surrogate-weights {source}: only {len(matched)} of {len(want)} feature tensors match "
                        f"'{arch}' ({report['missing']} missing, {report['unexpected']} unexpected, "
                        f"{report['mismatched_shape']} wrong shape); it looks like {ident.description}; {hint}")
    model.features.load_state_dict(matched, strict=False)
    if pretrained and in_channels is not None:
        report["adapted"] += _adapt_input(model, arch, in_channels)
    return report


def _first_conv(model: Classifier, arch: str) -> nn.Conv2d:
    mod: nn.Module = model.features
    for part in _STEM[arch]:
        mod = mod.get_submodule(part)
    assert isinstance(mod, nn.Conv2d), f"{arch}: no convolution at the expected stem position"
    return mod


def _set_first_conv(model: Classifier, arch: str, conv: nn.Conv2d) -> None:
    *parent, last = _STEM[arch]
    model.features.get_submodule(".".join(parent)).register_module(last, conv)


def _adapt_stem(model: Classifier, arch: str, given: dict[str, torch.Tensor]) -> list[str]:
    """Give the model the checkpoint's stem: its first convolution's kernel and input channels, stride 2 (both
    families are trained that way on ImageNet) and, for ResNets, the 3x3/2 max-pool."""
    key = ".".join((*_STEM[arch], "weight"))
    w = given.get(key)
    old = _first_conv(model, arch)
    if w is None or w.dim() != 4 or w.shape[0] != old.out_channels:
        return []
    cin, k = int(w.shape[1]), int(w.shape[-1])
    resnet = arch.startswith("resnet")
    changed = tuple(w.shape[1:]) != tuple(old.weight.shape[1:]) or old.stride != (2, 2)
    if changed:
        _set_first_conv(model, arch, nn.Conv2d(cin, old.out_channels, k, 2, k // 2, bias=old.bias is not None))
    if resnet and not isinstance(model.features[0][3], nn.MaxPool2d):
        model.features[0][3] = nn.MaxPool2d(3, 2, 1)
        changed = True
    if not changed:
        return []
    return [f"stem: {k}x{k} stride-2 convolution on {cin} channel(s){' + max-pool' if resnet else ''}, as in the "
            f"checkpoint"]


class _ImageNetInput(nn.Module):
    """Feed ``(B, C, H, W)`` images in [0, 1] the way ImageNet checkpoints were trained (grey repeated to RGB)."""

    def __init__(self, inner: nn.Module, channels: int) -> None:
        super().__init__()
        self.inner = inner
        self.channels = channels
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return self.inner((x - self.mean) / self.std)


def _adapt_input(model: Classifier, arch: str, data_channels: int) -> list[str]:
    """Wrap ``model.features`` so the data's images reach the checkpoint in its own input convention."""
    ckpt_channels = _first_conv(model, arch).in_channels
    if ckpt_channels == data_channels and ckpt_channels != 3:
        return []  # a custom (e.g. grey) checkpoint: no known normalisation, images go in as [0, 1]
    if ckpt_channels != 3 or data_channels not in (1, 3):
        raise UserError(f"--surrogate-weights: the checkpoint takes {ckpt_channels}-channel images, the data has "
                        f"{data_channels} channel(s)")
    model.features = _ImageNetInput(model.features, 3)
    return ["input: ImageNet mean/std" + (", grey repeated to RGB" if data_channels == 1 else "")]


def load_pretrained_file(model: Classifier, arch: str, path: str | os.PathLike,
                         min_match: float = 0.9) -> dict[str, Any]:
    """:func:`load_pretrained` from a local file (``.pt``/``.pth``/``.bin``/``.safetensors``)."""
    return load_pretrained(model, arch, read_state_dict(path), str(path), min_match)
