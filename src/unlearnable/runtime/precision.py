"""How a trainer uses its device: mixed precision, channels-last memory, pinned copies, optional ``torch.compile``.

Every trainer (victims, the UC/SimCLR surrogates, the EM/BEO gradient steps, 3D segmentation) takes one
:class:`Accel` and calls the helpers below, so the same flags mean the same thing everywhere:

- ``precision``: ``fp32`` (no autocast), ``bf16`` (autocast to bfloat16; no loss scaling needed, its exponent
  range is float32's) or ``fp16`` (autocast to float16 with a dynamic :class:`torch.amp.GradScaler`, whose loss
  scaling keeps small gradients from flushing to zero). Autocast runs on the device's own type, so ``bf16`` also
  works on a CPU (tests use it there).
- ``channels_last``: 2D convnets on CUDA are stored NHWC, which the tensor-core convolution kernels read without a
  transpose; on a CPU it is left off (no gain, and results would differ from the fp32 reference by layout only).
- ``compile``: ``torch.compile`` the model (off by default: compiling costs a minute and needs a C compiler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..registry import look_up_option

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def device_type(device: str | torch.device) -> str:
    """``"cuda:1"`` -> ``"cuda"`` (what ``torch.autocast`` and ``GradScaler`` take)."""
    return torch.device(device).type


def is_cuda(device: str | torch.device) -> bool:
    return device_type(device) == "cuda"


@dataclass(frozen=True)
class Accel:
    """Device settings of one training run; ``record`` is what results files and manifests store."""

    precision: str = "fp32"  # fp32 | bf16 | fp16
    compile: bool = False
    sync_bn: bool = False  # SyncBatchNorm when data-parallel (see runtime.distributed.wrap)

    def validate(self) -> Accel:
        look_up_option(self.precision, PRECISIONS, "--precision")
        return self

    def record(self, device: str, model: nn.Module | None = None) -> dict[str, Any]:
        return {"precision": self.precision, "autocast": self.precision != "fp32",
                "grad_scaler": self.precision == "fp16",
                "channels_last": bool(model is not None and use_channels_last(model, device)),
                "compile": self.compile, "pinned_memory": is_cuda(device)}


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward-pass context: ``torch.autocast`` on the device's type, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type(device), dtype=_DTYPES[precision])


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module, device: str) -> bool:
    """channels_last only pays for 2D convolutions on a GPU."""
    return is_cuda(device) and _has_conv2d(model)


def prepare(model: nn.Module, device: str, accel: Accel) -> nn.Module:
    """Move ``model`` to ``device`` (channels_last for 2D convnets on CUDA). Returns the same module object."""
    model = model.to(device)
    if use_channels_last(model, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def maybe_compile(net: nn.Module, accel: Accel) -> nn.Module:
    """``torch.compile(net)`` when asked; the caller keeps the uncompiled module for saving its weights."""
    return torch.compile(net) if accel.compile else net


def to_device(x: torch.Tensor, device: str, channels_last: bool = False) -> torch.Tensor:
    """Copy a host batch to ``device``: through pinned memory without blocking on CUDA, a plain copy elsewhere."""
    if is_cuda(device) and x.device.type == "cpu":
        x = x.pin_memory().to(device, non_blocking=True)
    else:
        x = x.to(device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Stepper:
    """``backward`` + ``optimizer.step`` with a GradScaler for fp16 (a plain step otherwise)."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: str, precision: str) -> None:
        self.opt = optimizer
        self.scaler = torch.amp.GradScaler(device_type(device), enabled=precision == "fp16")

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)  # skipped when fp16 gradients overflowed; the scale then shrinks
        self.scaler.update()


def input_grad(loss: torch.Tensor, wrt: torch.Tensor, precision: str) -> torch.Tensor:
    """``d loss / d wrt`` for perturbation updates; under fp16 the loss is scaled up first so that small
    gradients survive the half-precision backward pass, then the gradient is scaled back."""
    scale = 2.0 ** 12 if precision == "fp16" else 1.0
    (grad,) = torch.autograd.grad(loss * scale, wrt)
    return grad / scale if scale != 1.0 else grad


@contextlib.contextmanager
def timed_region(device: str) -> Iterator[None]:
    """Synchronise CUDA before and after, so wall-clock timings include the queued kernels."""
    if is_cuda(device):
        torch.cuda.synchronize(device)
    yield
    if is_cuda(device):
        torch.cuda.synchronize(device)
